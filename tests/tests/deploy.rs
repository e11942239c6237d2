//! What operators install beside the binary (`deploy/`), checked with the tools that
//! consume it:
//!
//! - the Prometheus alert rules: `promtool check rules` and their unit tests
//!   (`promtool test rules`), which must show every alert firing and not firing;
//! - the example Prometheus configuration: `promtool check config`;
//! - the Grafana dashboard and the rules' expressions: run as queries on a real
//!   Prometheus that scrapes a stand-in exporter serving the metric contract of
//!   DESIGN.md ("Metrics"), so a query naming a wrong metric or label comes back empty;
//! - the systemd unit: `systemd-analyze verify` and `systemd-analyze security`, and the
//!   logrotate snippet: `logrotate -d`;
//! - the Kubernetes manifests: `kubernetes-validate --strict` against the 1.30 schemas,
//!   plus the ServiceMonitor, the kustomization and the ConfigMap's TOML (parsed by the
//!   agent's own configuration parser).
//!
//! A missing Debian tool is installed with apt-get when running as root; otherwise the
//! test is skipped (a failure when PATHWATCH_REQUIRE_BPF is set). Every child process
//! has a deadline and is killed by its PID.

use std::{
    collections::BTreeSet,
    io::{Read, Write},
    net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use pathwatch_tests::{TempDir, privileged};
use serde_json::Value;

// ---------------------------------------------------------------------------------
// The metric contract (DESIGN.md, "Metrics").

const IFACES: &[&str] = &["eth0", "vpn0"];
const DIRECTIONS: &[&str] = &["ingress", "egress"];
const CLASSES: &[&str] = &["other", "dns", "dtls", "tls", "icmp_error", "tcp_syn", "large_df"];
const EVENT_KINDS: &[&str] = &[
    "dns_query",
    "dns_response",
    "dns_servfail",
    "dns_nxdomain",
    "dtls_record",
    "dtls_client_hello",
    "dtls_hello_verify",
    "dtls_server_hello",
    "tls_hello",
    "icmp_frag_needed",
    "icmpv6_packet_too_big",
    "icmp_port_unreachable",
    "tcp_syn",
    "tcp_large_retransmit",
    "tcp_fin",
];
const LOST_SOURCES: &[&str] = &["ringbuf", "queue", "undecodable"];
const RCODES: &[&str] = &["NOERROR", "SERVFAIL", "NXDOMAIN", "REFUSED"];
const FINDING_KINDS: &[&str] = &[
    "dns_probe_storm",
    "dtls_blocked",
    "dtls_port_unreachable",
    "vpn_reconnect_loop",
    "pmtu_black_hole",
    "pmtu_signal",
    "mss_exceeds_path_mtu",
];
const TABLES: &[&str] = &["dns_transactions", "dns_names", "dtls_flows", "tcp_flows", "findings"];

/// Every metric family the agent exposes.
const METRICS: &[&str] = &[
    "pathwatch_packets_total",
    "pathwatch_bytes_total",
    "pathwatch_events_total",
    "pathwatch_events_lost_total",
    "pathwatch_dns_responses_total",
    "pathwatch_dns_timeouts_total",
    "pathwatch_findings_total",
    "pathwatch_active_findings",
    "pathwatch_tracked_entries",
    "pathwatch_evictions_total",
    "pathwatch_build_info",
];

/// The alerts the rules must define.
const ALERTS: &[&str] = &[
    "PathwatchDnsProbeStorm",
    "PathwatchDtlsBlocked",
    "PathwatchPmtuBlackHole",
    "PathwatchEventsLost",
    "PathwatchAgentDown",
    "PathwatchAgentAbsent",
];

// ---------------------------------------------------------------------------------
// Helpers: paths, bounded child processes, tools.

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("repository root").to_path_buf()
}

fn deploy(rel: &str) -> PathBuf {
    repo().join("deploy").join(rel)
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// A finished child process.
struct Output {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Output {
    fn ok(&self) -> bool {
        self.code == Some(0)
    }

    fn text(&self) -> String {
        format!("exit code {:?}\n--- stdout\n{}--- stderr\n{}", self.code, self.stdout, self.stderr)
    }
}

/// Runs `program args` in `cwd` with `env` added, killing it (by PID) if it is not
/// done within `timeout`, which is then a test failure. A program that cannot be
/// started gives no exit code and the reason on stderr.
fn run_env(program: &str, args: &[&str], cwd: &Path, env: &[(&str, &str)], timeout: Duration) -> Output {
    let spawned = Command::new(program)
        .args(args)
        .current_dir(cwd)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match spawned {
        Ok(child) => child,
        Err(e) => return Output { code: None, stdout: String::new(), stderr: format!("cannot run {program}: {e}\n") },
    };
    let pipe = |mut r: Box<dyn Read + Send>| {
        thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = r.read_to_end(&mut buf);
            String::from_utf8_lossy(&buf).into_owned()
        })
    };
    let out = pipe(Box::new(child.stdout.take().expect("stdout")));
    let err = pipe(Box::new(child.stderr.take().expect("stderr")));
    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(20)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                // The readers may be held by grandchildren: leave them.
                panic!("{program} {args:?} did not finish within {timeout:?}; killed (pid {})", child.id());
            }
        }
    };
    Output { code: status.code(), stdout: out.join().unwrap_or_default(), stderr: err.join().unwrap_or_default() }
}

fn run(program: &str, args: &[&str], cwd: &Path, timeout: Duration) -> Output {
    run_env(program, args, cwd, &[], timeout)
}

/// The executable `tool` on PATH (or in the sbin directories).
fn which(tool: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path).chain(["/usr/sbin", "/sbin", "/usr/bin", "/bin"].map(PathBuf::from)).find_map(|dir| {
        let p = dir.join(tool);
        let meta = std::fs::metadata(&p).ok()?;
        use std::os::unix::fs::PermissionsExt;
        (meta.is_file() && meta.permissions().mode() & 0o111 != 0).then_some(p)
    })
}

/// One apt-get at a time (tests run in parallel threads).
static APT: Mutex<()> = Mutex::new(());

/// Installs Debian `packages` (as root): `apt-get install`, after `apt-get update` if
/// the first attempt fails.
fn apt_install(packages: &[&str]) {
    let _guard = APT.lock().unwrap_or_else(|e| e.into_inner());
    let env = [("DEBIAN_FRONTEND", "noninteractive")];
    let limit = Duration::from_secs(900);
    let mut args = vec!["install", "-y", "-q", "--no-install-recommends"];
    args.extend_from_slice(packages);
    let mut out = run_env("apt-get", &args, Path::new("/"), &env, limit);
    if !out.ok() {
        let update = run_env("apt-get", &["update", "-q"], Path::new("/"), &env, limit);
        assert!(update.ok(), "apt-get update failed:\n{}", update.text());
        out = run_env("apt-get", &args, Path::new("/"), &env, limit);
    }
    assert!(out.ok(), "apt-get install {packages:?} failed:\n{}", out.text());
}

/// The path of `tool`: found, or installed from Debian `package` when root. Otherwise
/// None: the test is skipped (or fails under PATHWATCH_REQUIRE_BPF).
fn tool(test: &str, tool: &str, package: &str) -> Option<String> {
    let path = |p: PathBuf| p.to_str().expect("utf-8 tool path").to_string();
    if let Some(p) = which(tool) {
        return Some(path(p));
    }
    if !privileged(test) {
        eprintln!("SKIP {test}: {tool} (Debian package {package}) is not installed");
        return None;
    }
    apt_install(&[package]);
    let p = which(tool).unwrap_or_else(|| panic!("{test}: installed {package} but {tool} is still missing"));
    Some(path(p))
}

// ---------------------------------------------------------------------------------
// Helpers: a tiny HTTP client, a stand-in exporter, a Prometheus child.

/// `GET path` from 127.0.0.1:port over HTTP/1.0: (status, body).
fn http_get(port: u16, path: &str) -> std::io::Result<(u16, String)> {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(20)))?;
    s.set_write_timeout(Some(Duration::from_secs(5)))?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n")?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    Ok((status, body.to_string()))
}

fn url_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind 127.0.0.1:0").local_addr().expect("local addr").port()
}

/// The metrics text of the contract, with counters growing with `n` (the scrape number).
fn contract_metrics(n: u64) -> String {
    let mut m = String::new();
    let mut family = |name: &str, kind: &str, help: &str, series: Vec<(String, u64)>| {
        m.push_str(&format!("# HELP {name} {help}\n# TYPE {name} {kind}\n"));
        for (labels, v) in series {
            m.push_str(&format!("{name}{labels} {v}\n"));
        }
    };
    let per = |label: &str, values: &[&str], f: &dyn Fn(usize) -> u64| -> Vec<(String, u64)> {
        values.iter().enumerate().map(|(i, v)| (format!("{{{label}=\"{v}\"}}"), f(i))).collect()
    };
    let traffic = |scale: u64| {
        let mut out = Vec::new();
        for iface in IFACES {
            for dir in DIRECTIONS {
                for (i, class) in CLASSES.iter().enumerate() {
                    let labels = format!("{{iface=\"{iface}\",direction=\"{dir}\",class=\"{class}\"}}");
                    out.push((labels, n * scale * (i as u64 + 1)));
                }
            }
        }
        out
    };
    let packets = traffic(10);
    let bytes = traffic(1000);
    family("pathwatch_packets_total", "counter", "Packets seen.", packets);
    family("pathwatch_bytes_total", "counter", "Bytes seen.", bytes);
    family("pathwatch_events_total", "counter", "Events decoded.", per("kind", EVENT_KINDS, &|i| n * (i as u64 + 1)));
    family("pathwatch_events_lost_total", "counter", "Events lost.", per("source", LOST_SOURCES, &|i| n * i as u64));
    family("pathwatch_dns_responses_total", "counter", "DNS responses.", per("rcode", RCODES, &|i| n * (4 - i as u64)));
    family("pathwatch_dns_timeouts_total", "counter", "DNS timeouts.", vec![(String::new(), n)]);
    family(
        "pathwatch_findings_total",
        "counter",
        "Findings raised.",
        per("kind", FINDING_KINDS, &|i| n / 5 + i as u64),
    );
    family("pathwatch_active_findings", "gauge", "Active findings.", per("kind", FINDING_KINDS, &|i| (i % 2) as u64));
    family("pathwatch_tracked_entries", "gauge", "Tracked entries.", per("table", TABLES, &|i| 100 * (i as u64 + 1)));
    family("pathwatch_evictions_total", "counter", "Evictions.", per("table", TABLES, &|i| n * i as u64));
    family("pathwatch_build_info", "gauge", "Build information.", vec![("{version=\"0.1.0\"}".into(), 1)]);
    m
}

/// A stand-in for the agent's /metrics: serves `contract_metrics` on 127.0.0.1 until
/// dropped.
struct FakeExporter {
    port: u16,
    stop: Arc<AtomicBool>,
    thread: Option<thread::JoinHandle<()>>,
}

impl FakeExporter {
    fn start() -> FakeExporter {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind exporter");
        let port = listener.local_addr().expect("exporter addr").port();
        let stop = Arc::new(AtomicBool::new(false));
        let scrapes = AtomicU64::new(0);
        let stop2 = stop.clone();
        let thread = thread::spawn(move || {
            for conn in listener.incoming() {
                if stop2.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(mut conn) = conn else { continue };
                let _ = conn.set_read_timeout(Some(Duration::from_secs(5)));
                let mut req = Vec::new();
                let mut buf = [0u8; 1024];
                while !req.windows(4).any(|w| w == b"\r\n\r\n") && req.len() < 16384 {
                    match conn.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(k) => req.extend_from_slice(&buf[..k]),
                    }
                }
                let (status, body) = if req.starts_with(b"GET /metrics") {
                    ("200 OK", contract_metrics(scrapes.fetch_add(1, Ordering::SeqCst) + 1))
                } else if req.starts_with(b"GET /healthz") {
                    ("200 OK", "ok\n".to_string())
                } else {
                    ("404 Not Found", "only /metrics and /healthz\n".to_string())
                };
                let _ = write!(
                    conn,
                    "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
            }
        });
        FakeExporter { port, stop, thread: Some(thread) }
    }
}

impl Drop for FakeExporter {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect_timeout(&SocketAddr::from((Ipv4Addr::LOCALHOST, self.port)), Duration::from_secs(1));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A Prometheus server child process, killed by its PID when dropped (also when the
/// test panics), then its data directory removed.
struct Prometheus {
    child: Child,
    port: u16,
    log: PathBuf,
    _dir: TempDir,
}

impl Prometheus {
    /// Starts Prometheus with `rule_file` and one scrape job `pathwatch` on
    /// 127.0.0.1:`target_port`, and waits until it is ready.
    fn start(prometheus: &str, name: &str, rule_file: &Path, target_port: u16) -> Prometheus {
        let dir = TempDir::new(name);
        let config = dir.0.join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
                 rule_files:\n  - {rules}\n\
                 scrape_configs:\n  - job_name: pathwatch\n    static_configs:\n      - targets: ['127.0.0.1:{target_port}']\n",
                rules = rule_file.display()
            ),
        )
        .expect("write prometheus.yml");
        let log = dir.0.join("prometheus.log");
        let logfile = std::fs::File::create(&log).expect("prometheus log");
        let port = free_port();
        let child = Command::new(prometheus)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.tsdb.path={}", dir.0.join("data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--storage.tsdb.retention.time=1h")
            .current_dir(&dir.0)
            .stdin(Stdio::null())
            .stdout(logfile.try_clone().expect("log fd"))
            .stderr(logfile)
            .spawn()
            .expect("start prometheus");
        let mut p = Prometheus { child, port, log, _dir: dir };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(Some(status)) = p.child.try_wait() {
                panic!("prometheus exited ({status}) before it was ready:\n{}", p.log());
            }
            if matches!(http_get(port, "/-/ready"), Ok((200, _))) {
                return p;
            }
            assert!(Instant::now() < deadline, "prometheus not ready within 60 s:\n{}", p.log());
            thread::sleep(Duration::from_millis(100));
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// `/api/v1/<path>`, parsed.
    fn api(&self, path: &str) -> Value {
        let (status, body) =
            http_get(self.port, &format!("/api/v1/{path}")).unwrap_or_else(|e| panic!("GET /api/v1/{path}: {e}"));
        serde_json::from_str(&body)
            .unwrap_or_else(|e| panic!("GET /api/v1/{path}: HTTP {status}, not JSON ({e}): {body}"))
    }

    /// An instant query: the result vector, or a panic naming `what` and the error.
    fn query(&self, what: &str, expr: &str) -> Vec<Value> {
        let v = self.api(&format!("query?query={}", url_encode(expr)));
        assert_eq!(v["status"], "success", "{what}: the query\n    {expr}\nfails on Prometheus: {v}");
        match &v["data"]["result"] {
            Value::Array(a) => a.clone(),
            // A scalar or string result.
            other => vec![other.clone()],
        }
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Every string under an `"expr"` key in `v`, with the JSON path where it was found.
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

/// A dashboard expression with Grafana's variables replaced as a query would see them.
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

fn dashboard() -> Value {
    let path = deploy("grafana/pathwatch.json");
    serde_json::from_str(&read(&path)).unwrap_or_else(|e| panic!("{}: not JSON: {e}", path.display()))
}

/// `label_values(SELECTOR, LABEL)` → (SELECTOR, LABEL).
fn label_values(query: &str) -> (String, String) {
    let inner = query
        .trim()
        .strip_prefix("label_values(")
        .and_then(|q| q.strip_suffix(')'))
        .unwrap_or_else(|| panic!("not label_values(...): {query}"));
    let (sel, label) = inner.rsplit_once(',').unwrap_or_else(|| panic!("label_values without a label: {query}"));
    (sel.trim().to_string(), label.trim().to_string())
}

/// The alert names in a rules file (`- alert: Name` lines).
fn alert_names(rules: &str) -> Vec<String> {
    rules.lines().filter_map(|l| l.trim().strip_prefix("- alert:")).map(|n| n.trim().to_string()).collect()
}

// ---------------------------------------------------------------------------------
// Prometheus rules and configuration.

#[test]
fn prometheus_rules_check_and_unit_tests() {
    let Some(promtool) = tool("prometheus_rules_check_and_unit_tests", "promtool", "prometheus") else { return };
    let limit = Duration::from_secs(120);
    let check = run(&promtool, &["check", "rules", "deploy/prometheus/pathwatch-rules.yml"], &repo(), limit);
    assert!(check.ok() && check.stdout.contains("SUCCESS"), "promtool check rules:\n{}", check.text());
    println!("{}", check.stdout.trim());

    let test = run(&promtool, &["test", "rules", "deploy/prometheus/pathwatch-rules-test.yml"], &repo(), limit);
    assert!(test.ok() && test.stdout.contains("SUCCESS"), "promtool test rules:\n{}", test.text());
    println!("{}", test.stdout.trim());

    // Every alert is tested firing (a non-empty exp_alerts) and not firing (exp_alerts: []).
    let alerts = alert_names(&read(&deploy("prometheus/pathwatch-rules.yml")));
    for a in ALERTS {
        assert!(alerts.iter().any(|x| x == a), "pathwatch-rules.yml has no alert {a}");
    }
    let tests = read(&deploy("prometheus/pathwatch-rules-test.yml"));
    let (mut firing, mut silent) = (BTreeSet::new(), BTreeSet::new());
    let mut current: Option<String> = None;
    for line in tests.lines().map(str::trim) {
        if let Some(name) = line.strip_prefix("alertname:").or_else(|| line.strip_prefix("- alertname:")) {
            current = Some(name.trim().to_string());
        } else if let Some(rest) = line.strip_prefix("exp_alerts:") {
            let name = current.clone().expect("exp_alerts before any alertname");
            let rest = rest.split('#').next().unwrap_or("").trim();
            if rest == "[]" {
                silent.insert(name);
            } else {
                assert!(rest.is_empty(), "unexpected exp_alerts form: {line}");
                firing.insert(name);
            }
        }
    }
    for a in &alerts {
        assert!(firing.contains(a), "pathwatch-rules-test.yml never shows {a} firing");
        assert!(silent.contains(a), "pathwatch-rules-test.yml never shows {a} not firing (exp_alerts: [])");
    }
}

#[test]
fn prometheus_example_config_checks() {
    let Some(promtool) = tool("prometheus_example_config_checks", "promtool", "prometheus") else { return };
    let out =
        run(&promtool, &["check", "config", "deploy/prometheus/prometheus.yml"], &repo(), Duration::from_secs(120));
    assert!(out.ok(), "promtool check config:\n{}", out.text());
    let text = format!("{}{}", out.stdout, out.stderr);
    assert!(text.contains("is valid prometheus config file"), "{}", out.text());
    assert!(
        text.contains("SUCCESS: 1 rule files found"),
        "prometheus.yml should load pathwatch-rules.yml:\n{}",
        out.text()
    );
    let config = read(&deploy("prometheus/prometheus.yml"));
    assert!(
        config.contains("job_name: pathwatch"),
        "the scrape job must be named pathwatch (the up/absent alerts use it)"
    );
}

// ---------------------------------------------------------------------------------
// Grafana dashboard.

#[test]
fn grafana_dashboard_structure() {
    let d = dashboard();
    let schema = d["schemaVersion"].as_u64().expect("schemaVersion");
    assert!((36..=41).contains(&schema), "schemaVersion {schema}");
    assert!(d["uid"].is_string() && d["title"].is_string(), "uid and title");

    let vars = d["templating"]["list"].as_array().expect("templating.list");
    let var =
        |name: &str| vars.iter().find(|v| v["name"] == name).unwrap_or_else(|| panic!("no template variable {name}"));
    let ds = var("datasource");
    assert_eq!(ds["type"], "datasource");
    assert_eq!(ds["query"], "prometheus");
    let query_of = |v: &Value| v["query"].as_str().or_else(|| v["query"]["query"].as_str()).map(str::to_string);
    assert_eq!(query_of(var("instance")).as_deref(), Some("label_values(pathwatch_packets_total, instance)"));
    assert_eq!(
        query_of(var("iface")).as_deref(),
        Some("label_values(pathwatch_packets_total{instance=~\"$instance\"}, iface)")
    );

    let mut ids = BTreeSet::new();
    let mut all = Vec::new();
    let panels = d["panels"].as_array().expect("panels");
    for p in panels.iter().flat_map(|p| std::iter::once(p).chain(p["panels"].as_array().into_iter().flatten())) {
        let title = p["title"].as_str().unwrap_or("?");
        assert!(ids.insert(p["id"].as_u64().expect("panel id")), "duplicate panel id in {title}");
        let g = &p["gridPos"];
        assert!(g["x"].as_u64().unwrap() + g["w"].as_u64().unwrap() <= 24, "{title}: wider than the grid");
        if p["type"] == "row" {
            continue;
        }
        assert_eq!(p["datasource"]["uid"], "${datasource}", "{title}: panel datasource");
        let targets = p["targets"].as_array().unwrap_or_else(|| panic!("{title}: no targets"));
        assert!(!targets.is_empty(), "{title}: no targets");
        for t in targets {
            assert_eq!(t["datasource"]["uid"], "${datasource}", "{title}: target datasource");
            let e = t["expr"].as_str().unwrap_or_else(|| panic!("{title}: target without expr"));
            assert!(e.contains("instance=~\"$instance\""), "{title}: not filtered by $instance: {e}");
            if e.contains("pathwatch_packets_total") || e.contains("pathwatch_bytes_total") {
                assert!(e.contains("iface=~\"$iface\""), "{title}: not filtered by $iface: {e}");
            }
            all.push(e.to_string());
        }
    }
    for m in METRICS {
        assert!(all.iter().any(|e| e.contains(m)), "no dashboard panel shows {m}");
    }
    // The panels the dashboard is for.
    let titles: Vec<String> =
        panels.iter().filter_map(|p| p["title"].as_str()).map(str::to_lowercase).collect::<Vec<_>>();
    for want in [
        "packets/s",
        "bytes/s",
        "events/s by kind",
        "lost events",
        "dns responses",
        "active findings",
        "tracked entries",
        "evictions",
    ] {
        assert!(titles.iter().any(|t| t.contains(want)), "no panel titled like {want:?}");
    }
}

#[test]
fn dashboard_and_rule_queries_run_on_prometheus() {
    let test = "dashboard_and_rule_queries_run_on_prometheus";
    let Some(prometheus) = tool(test, "prometheus", "prometheus") else { return };
    let exporter = FakeExporter::start();
    let prom =
        Prometheus::start(&prometheus, "deploy-prometheus", &deploy("prometheus/pathwatch-rules.yml"), exporter.port);

    // Two scrapes at least, so rate() has something to say.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let up = prom.query("up", "up{job=\"pathwatch\"} == 1");
        let rate = prom.query("rate", "rate(pathwatch_packets_total[1m])");
        if !up.is_empty() && !rate.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "prometheus did not scrape the stand-in exporter twice in 60 s:\n{}",
            prom.log()
        );
        thread::sleep(Duration::from_millis(250));
    }

    // The dashboard: every expression runs and (but for the alert annotation) finds data.
    let d = dashboard();
    let mut found = Vec::new();
    exprs(&d, "$", &mut found);
    assert!(found.len() >= 10, "only {} expressions in the dashboard", found.len());
    for (at, expr) in &found {
        let q = substitute(expr);
        let result = prom.query(at, &q);
        if !expr.contains("ALERTS") {
            assert!(
                !result.is_empty(),
                "{at}: the query\n    {q}\nreturns nothing on data that follows the metric contract"
            );
        }
    }
    // The template variables' selectors.
    for v in d["templating"]["list"].as_array().expect("templating") {
        if v["type"] != "query" {
            continue;
        }
        let query = v["query"].as_str().or_else(|| v["query"]["query"].as_str()).expect("variable query");
        let (selector, label) = label_values(query);
        let result = prom.query(query, &substitute(&selector));
        assert!(!result.is_empty(), "variable {}: {selector} selects nothing", v["name"]);
        for s in &result {
            assert!(s["metric"][&label].is_string(), "variable {}: a series without {label}: {s}", v["name"]);
        }
    }
    println!("{} dashboard expressions ran on Prometheus", found.len());

    // The rules as Prometheus loaded them: each expression runs, each evaluation is
    // healthy, and each alert carries severity, summary, description and runbook.
    let deadline = Instant::now() + Duration::from_secs(60);
    let rules = loop {
        let v = prom.api("rules");
        assert_eq!(v["status"], "success", "{v}");
        let rules: Vec<Value> = v["data"]["groups"]
            .as_array()
            .expect("groups")
            .iter()
            .flat_map(|g| g["rules"].as_array().cloned().unwrap_or_default())
            .collect();
        if !rules.is_empty() && rules.iter().all(|r| r["health"] != "unknown") {
            break rules;
        }
        assert!(Instant::now() < deadline, "rules not evaluated within 60 s: {v}\n{}", prom.log());
        thread::sleep(Duration::from_millis(250));
    };
    for r in &rules {
        let name = r["name"].as_str().expect("rule name");
        assert_eq!(r["health"], "ok", "rule {name}: {}", r["lastError"]);
        prom.query(name, r["query"].as_str().expect("rule query"));
    }
    let alerting: Vec<&Value> = rules.iter().filter(|r| r["type"] == "alerting").collect();
    for a in ALERTS {
        assert!(alerting.iter().any(|r| r["name"] == *a), "Prometheus did not load alert {a}");
    }
    for r in &alerting {
        let name = r["name"].as_str().unwrap();
        let sev = r["labels"]["severity"].as_str().unwrap_or_else(|| panic!("{name}: no severity label"));
        assert!(["info", "warning", "critical"].contains(&sev), "{name}: severity {sev}");
        for k in ["summary", "description", "runbook"] {
            let text = r["annotations"][k].as_str().unwrap_or("");
            assert!(text.len() > 10, "{name}: no {k} annotation");
        }
    }
    let runbook = |a: &str| {
        alerting.iter().find(|r| r["name"] == a).expect("alert")["annotations"]["runbook"].as_str().unwrap().to_string()
    };
    let pmtu_severity =
        alerting.iter().find(|r| r["name"] == "PathwatchPmtuBlackHole").expect("alert")["labels"]["severity"].clone();
    assert_eq!(pmtu_severity, "critical");
    // The remedies of DESIGN.md, quoted.
    assert!(runbook("PathwatchDnsProbeStorm").contains("Make mus.cisco.com resolvable (DNS entry or hosts file)"));
    assert!(runbook("PathwatchDtlsBlocked").contains("allow UDP 443 to the VPN server / fix the DTLS port"));
    let pmtu = runbook("PathwatchPmtuBlackHole");
    assert!(
        pmtu.contains("Let ICMP fragmentation-needed through or clamp the TCP MSS")
            && pmtu.contains("tcp option maxseg size set")
    );
    assert!(runbook("PathwatchEventsLost").contains("the agent's ring buffer overflows: raise kernel.ringbuf_bytes"));
    println!("{} rules loaded and evaluated by Prometheus", rules.len());
    drop(prom);
    drop(exporter);
}

// ---------------------------------------------------------------------------------
// systemd unit and logrotate.

/// `Key=Value` lines of a unit file (comments and sections left out).
fn directives(unit: &str) -> Vec<(String, String)> {
    unit.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#') && !l.starts_with(';') && !l.starts_with('['))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}

#[test]
fn systemd_unit_verifies() {
    let test = "systemd_unit_verifies";
    let path = deploy("systemd/pathwatch.service");
    let unit = read(&path);
    let d = directives(&unit);
    let get = |k: &str| d.iter().filter(|(key, _)| key == k).map(|(_, v)| v.clone()).collect::<Vec<_>>();
    let one = |k: &str| {
        let v = get(k);
        assert_eq!(v.len(), 1, "{k}= should be set once: {v:?}");
        v[0].clone()
    };
    let words = |s: String| s.split_whitespace().map(str::to_string).collect::<BTreeSet<_>>();
    let caps = words("CAP_BPF CAP_NET_ADMIN CAP_PERFMON".into());
    assert_eq!(words(one("AmbientCapabilities")), caps);
    assert_eq!(words(one("CapabilityBoundingSet")), caps);
    assert_eq!(words(one("RestrictAddressFamilies")), words("AF_UNIX AF_INET AF_INET6 AF_NETLINK".into()));
    for (k, v) in [
        ("User", "pathwatch"),
        ("NoNewPrivileges", "yes"),
        ("ProtectSystem", "strict"),
        ("ProtectHome", "yes"),
        ("PrivateTmp", "yes"),
        ("LogsDirectory", "pathwatch"),
        ("ExecReload", "/bin/kill -HUP $MAINPID"),
        ("Restart", "on-failure"),
        ("EnvironmentFile", "-/etc/default/pathwatch"),
        ("LimitMEMLOCK", "infinity"),
    ] {
        assert_eq!(one(k), v, "{k}=");
    }
    let exec = one("ExecStart");
    assert!(
        exec.starts_with(
            "/usr/local/bin/pathwatch run -i ${PATHWATCH_INTERFACES} --config /etc/pathwatch/pathwatch.toml \
             --metrics 127.0.0.1:9464 --json /var/log/pathwatch/findings.jsonl"
        ),
        "ExecStart={exec}"
    );
    // Settings that would hide or detach what BPF, BTF, netlink and XDP attach need.
    for k in ["ProtectKernelTunables", "PrivateDevices", "PrivateNetwork", "PrivateUsers"] {
        for v in get(k) {
            assert!(!matches!(v.as_str(), "yes" | "true" | "on" | "1"), "{k}={v} would break BPF or XDP attach");
        }
    }
    assert!(get("ProcSubset").iter().all(|v| v != "pid"), "ProcSubset=pid hides /proc/sys");

    let Some(analyze) = tool(test, "systemd-analyze", "systemd") else { return };
    // /usr/local/bin/pathwatch is not installed here: verify a copy that runs `true`,
    // so that what remains to complain about is the unit's own content.
    let dir = TempDir::new("systemd-unit");
    let bin = "/usr/local/bin/pathwatch";
    let copy = if Path::new(bin).exists() {
        unit.clone()
    } else {
        let t = which("true").expect("true");
        unit.replace(&format!("ExecStart={bin}"), &format!("ExecStart={}", t.display()))
    };
    let tmp_unit = dir.0.join("pathwatch.service");
    std::fs::write(&tmp_unit, copy).expect("write unit copy");
    let unit_arg = tmp_unit.to_str().expect("utf-8 path");
    let out = run_env(
        &analyze,
        &["verify", "--man=no", unit_arg],
        &dir.0,
        &[("SYSTEMD_LOG_LEVEL", "notice"), ("LC_ALL", "C")],
        Duration::from_secs(120),
    );
    let all = format!("{}{}", out.stdout, out.stderr);
    let problems: Vec<&str> = all.lines().filter(|l| l.contains("pathwatch")).collect();
    for l in all.lines().filter(|l| !l.contains("pathwatch") && !l.trim().is_empty()) {
        eprintln!("note (not about this unit): {l}");
    }
    assert!(out.ok() && problems.is_empty(), "systemd-analyze verify complains about the unit:\n{}", out.text());

    // The hardening, scored by systemd itself (0 = locked down, 10 = exposed).
    let sec = run_env(
        &analyze,
        &["security", "--offline=yes", "--threshold=40", "--no-pager", unit_arg],
        &dir.0,
        &[("LC_ALL", "C")],
        Duration::from_secs(120),
    );
    let overall = format!("{}{}", sec.stdout, sec.stderr);
    let overall = overall.lines().find(|l| l.contains("Overall exposure level")).unwrap_or("").to_string();
    assert!(sec.ok(), "systemd-analyze security: exposure above 4.0 or an error:\n{}", sec.text());
    println!("systemd-analyze verify: clean; security: {}", overall.trim());
}

#[test]
fn logrotate_snippet_is_valid() {
    let test = "logrotate_snippet_is_valid";
    let text = read(&deploy("systemd/pathwatch.logrotate"));
    let active: Vec<&str> = text.lines().map(str::trim).filter(|l| !l.starts_with('#')).collect();
    assert!(
        !active.iter().any(|l| l.starts_with("copytruncate")),
        "copytruncate must not be used: the agent reopens on SIGHUP"
    );
    assert!(
        active.iter().any(|l| l.starts_with("systemctl reload pathwatch")),
        "postrotate must reload pathwatch (SIGHUP)"
    );
    assert!(active.iter().any(|l| l.starts_with("/var/log/pathwatch/")), "must rotate /var/log/pathwatch/");
    let Some(logrotate) = tool(test, "logrotate", "logrotate") else { return };
    // logrotate insists on a config owned by the user running it and not writable by
    // others: use a fresh copy.
    let dir = TempDir::new("logrotate");
    let conf = dir.0.join("pathwatch");
    std::fs::write(&conf, &text).expect("write logrotate copy");
    let state = dir.0.join("state");
    let out = run(
        &logrotate,
        &["-d", "-s", state.to_str().unwrap(), conf.to_str().unwrap()],
        &dir.0,
        Duration::from_secs(60),
    );
    let all = format!("{}{}", out.stdout, out.stderr);
    let errors: Vec<&str> = all.lines().filter(|l| l.to_lowercase().contains("error")).collect();
    assert!(out.ok() && errors.is_empty(), "logrotate -d:\n{}", out.text());
    assert!(all.contains("rotating pattern: /var/log/pathwatch/*.jsonl"), "logrotate -d:\n{}", out.text());
}

// ---------------------------------------------------------------------------------
// Kubernetes manifests.

/// The target directory (where cargo put this test executable).
fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable");
    // <target>/<profile>/deps/deploy-<hash>
    exe.ancestors().nth(3).expect("target dir").to_path_buf()
}

const KUBERNETES_VALIDATE: &str = "kubernetes-validate==1.37.0";

/// A Python venv under the target directory with kubernetes-validate (and PyYAML),
/// made on first use. None when the test is skipped.
fn validate_venv(test: &str) -> Option<PathBuf> {
    // One per user: a venv points at its creator's interpreter, which another user
    // may not be allowed to run.
    let venv = target_dir().join(format!("deploy-venv-uid{}", unsafe { libc::geteuid() }));
    let kv = venv.join("bin/kubernetes-validate");
    let works = |kv: &Path| run(kv.to_str().unwrap(), &["--version"], Path::new("/"), Duration::from_secs(60)).ok();
    if works(&kv) {
        return Some(venv);
    }
    let python = tool(test, "python3", "python3")?;
    let _ = std::fs::remove_dir_all(&venv);
    let venv_arg = venv.to_str().expect("utf-8 target path");
    let mut made = run(&python, &["-m", "venv", venv_arg], Path::new("/"), Duration::from_secs(300));
    if !made.ok() && unsafe { libc::geteuid() } == 0 {
        // Debian's python3 keeps venv (ensurepip) in a package of its own.
        apt_install(&["python3-venv"]);
        let _ = std::fs::remove_dir_all(&venv);
        made = run(&python, &["-m", "venv", venv_arg], Path::new("/"), Duration::from_secs(300));
    }
    assert!(made.ok(), "cannot create a Python venv for kubernetes-validate at {venv_arg}:\n{}", made.text());
    let pip = venv.join("bin/pip");
    let out = run(
        pip.to_str().unwrap(),
        &["install", "--quiet", "--disable-pip-version-check", KUBERNETES_VALIDATE],
        Path::new("/"),
        Duration::from_secs(900),
    );
    assert!(
        out.ok() && works(&kv),
        "kubernetes-validate could not be installed (pip install {KUBERNETES_VALIDATE} into {venv_arg}; \
         PyPI must be reachable):\n{}",
        out.text()
    );
    Some(venv)
}

/// All YAML documents of `file`, as JSON (PyYAML in the venv).
fn yaml_docs(venv: &Path, file: &Path) -> Vec<Value> {
    let py = venv.join("bin/python");
    let out = run(
        py.to_str().unwrap(),
        &[
            "-c",
            "import json, sys, yaml\n\
             docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d is not None]\n\
             json.dump(docs, sys.stdout)",
            file.to_str().unwrap(),
        ],
        Path::new("/"),
        Duration::from_secs(60),
    );
    assert!(out.ok(), "{}: not valid YAML:\n{}", file.display(), out.text());
    match serde_json::from_str(&out.stdout).expect("yaml as json") {
        Value::Array(a) => a,
        _ => unreachable!(),
    }
}

fn find<'a>(docs: &'a [Value], kind: &str) -> &'a Value {
    docs.iter().find(|d| d["kind"] == kind).unwrap_or_else(|| panic!("no {kind} in the manifests"))
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array().map(|a| a.iter().filter_map(|x| x.as_str().map(str::to_string)).collect()).unwrap_or_default()
}

#[test]
fn kubernetes_manifests_validate() {
    let test = "kubernetes_manifests_validate";
    let Some(venv) = validate_venv(test) else { return };
    let dir = deploy("kubernetes");
    let mut files: Vec<String> = std::fs::read_dir(&dir)
        .expect("deploy/kubernetes")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".yaml") || n.ends_with(".yml"))
        .collect();
    files.sort();
    for want in ["namespace.yaml", "configmap.yaml", "daemonset.yaml", "servicemonitor.yaml", "kustomization.yaml"] {
        assert!(files.iter().any(|f| f == want), "deploy/kubernetes/{want} is missing");
    }
    // Kubernetes' own kinds against the 1.30 schemas, unknown fields rejected. The
    // Kustomization is no API object; the ServiceMonitor (a CRD) has no schema there and
    // is only warned about, while the Service beside it is validated.
    let manifests: Vec<&str> = files.iter().map(String::as_str).filter(|f| *f != "kustomization.yaml").collect();
    let kv = venv.join("bin/kubernetes-validate");
    let mut args = vec!["--strict", "-k", "1.30.0"];
    args.extend(manifests.iter().copied());
    let out = run(kv.to_str().unwrap(), &args, &dir, Duration::from_secs(300));
    let all = format!("{}{}", out.stdout, out.stderr);
    assert!(out.ok() && !all.contains("ERROR"), "kubernetes-validate --strict -k 1.30.0:\n{}", out.text());
    for res in ["namespace/pathwatch", "configmap/pathwatch-config", "daemonset/pathwatch", "service/pathwatch"] {
        assert!(all.contains(&format!("passed for resource {res} ")), "{res} was not validated:\n{all}");
    }
    println!("{}", all.trim());

    let mut docs = Vec::new();
    for f in &files {
        docs.extend(yaml_docs(&venv, &dir.join(f)));
    }

    // The kustomization lists exactly the manifests.
    let kustomization = find(&docs, "Kustomization");
    assert_eq!(kustomization["apiVersion"], "kustomize.config.k8s.io/v1beta1");
    let mut resources = strings(&kustomization["resources"]);
    resources.sort();
    let mut expected: Vec<String> = manifests.iter().map(|s| s.to_string()).collect();
    expected.sort();
    assert_eq!(resources, expected, "kustomization.yaml resources");

    // The DaemonSet.
    let ds = find(&docs, "DaemonSet");
    assert_eq!(ds["metadata"]["namespace"], "pathwatch");
    let tmpl = &ds["spec"]["template"];
    let pod = &tmpl["spec"];
    assert_eq!(pod["hostNetwork"], true);
    assert_eq!(pod["dnsPolicy"], "ClusterFirstWithHostNet");
    let ann = &tmpl["metadata"]["annotations"];
    assert_eq!(ann["prometheus.io/scrape"], "true");
    assert_eq!(ann["prometheus.io/port"], "9464");
    let c = &pod["containers"][0];
    let args = strings(&c["args"]);
    let joined = args.join(" ");
    assert!(joined.starts_with("run -i eth0 --metrics 0.0.0.0:9464 --json -"), "args: {joined}");
    let sc = &c["securityContext"];
    assert_eq!(sc["privileged"], false);
    assert_eq!(sc["allowPrivilegeEscalation"], false);
    let set = |v: &Value| strings(v).into_iter().collect::<BTreeSet<_>>();
    assert_eq!(set(&sc["capabilities"]["add"]), BTreeSet::from(["BPF", "NET_ADMIN", "PERFMON"].map(String::from)));
    assert_eq!(set(&sc["capabilities"]["drop"]), BTreeSet::from(["ALL".to_string()]));
    assert_eq!(c["resources"]["requests"]["cpu"], "50m");
    assert_eq!(c["resources"]["requests"]["memory"], "64Mi");
    assert_eq!(c["resources"]["limits"]["memory"], "192Mi");
    for probe in ["livenessProbe", "readinessProbe"] {
        assert_eq!(c[probe]["httpGet"]["path"], "/healthz", "{probe}");
        assert_eq!(c[probe]["httpGet"]["port"], 9464, "{probe}");
    }
    let mounts = c["volumeMounts"].as_array().expect("volumeMounts");
    let volumes = pod["volumes"].as_array().expect("volumes");
    for host in ["/sys/fs/bpf", "/sys/kernel/btf"] {
        let vol = volumes
            .iter()
            .find(|v| v["hostPath"]["path"] == host)
            .unwrap_or_else(|| panic!("no hostPath volume for {host}"));
        let m = mounts.iter().find(|m| m["name"] == vol["name"]).unwrap_or_else(|| panic!("{host} not mounted"));
        assert_eq!(m["readOnly"], true, "{host} must be mounted read-only");
    }

    // The ConfigMap holds the file the DaemonSet passes to --config, and the agent's
    // own parser accepts it.
    let cm = find(&docs, "ConfigMap");
    let toml = cm["data"]["pathwatch.toml"].as_str().expect("ConfigMap data pathwatch.toml");
    if let Err(e) = pathwatch::config::Config::parse(toml, Path::new("configmap.yaml:pathwatch.toml")) {
        panic!("the ConfigMap's pathwatch.toml is rejected by the agent: {e}");
    }
    let config_arg = args.iter().position(|a| a == "--config").map(|i| args[i + 1].clone()).expect("--config in args");
    let cfg_vol = volumes.iter().find(|v| v["configMap"]["name"] == cm["metadata"]["name"]).expect("ConfigMap volume");
    let cfg_mount = mounts.iter().find(|m| m["name"] == cfg_vol["name"]).expect("ConfigMap mount");
    assert_eq!(config_arg, format!("{}/pathwatch.toml", cfg_mount["mountPath"].as_str().unwrap()));

    // The headless Service selects the agent pods; the ServiceMonitor selects the Service.
    let svc = find(&docs, "Service");
    assert_eq!(svc["spec"]["clusterIP"], "None", "the Service should be headless");
    let pod_labels = &tmpl["metadata"]["labels"];
    for (k, v) in svc["spec"]["selector"].as_object().expect("Service selector") {
        assert_eq!(&pod_labels[k], v, "Service selector {k} does not match the pods");
    }
    let sm = find(&docs, "ServiceMonitor");
    assert_eq!(sm["apiVersion"], "monitoring.coreos.com/v1");
    assert!(
        sm["metadata"]["name"].is_string() && sm["metadata"]["namespace"] == "pathwatch",
        "ServiceMonitor metadata"
    );
    let endpoints = sm["spec"]["endpoints"].as_array().expect("ServiceMonitor spec.endpoints");
    assert!(!endpoints.is_empty(), "ServiceMonitor without endpoints");
    let port_names: Vec<&Value> =
        svc["spec"]["ports"].as_array().expect("Service ports").iter().map(|p| &p["name"]).collect();
    for ep in endpoints {
        assert!(port_names.contains(&&ep["port"]), "ServiceMonitor endpoint port {} is not a Service port", ep["port"]);
    }
    for (k, v) in sm["spec"]["selector"]["matchLabels"].as_object().expect("ServiceMonitor selector") {
        assert_eq!(&svc["metadata"]["labels"][k], v, "ServiceMonitor selector {k} does not match the Service");
    }
    // The job label is the Service's name: the up{job="pathwatch"} alerts rely on it.
    assert_eq!(svc["metadata"]["name"], "pathwatch");
    let ns = find(&docs, "Namespace");
    assert_eq!(ns["metadata"]["name"], "pathwatch");
}
