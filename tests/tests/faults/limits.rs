//! What the agent takes from its host: almost no CPU when idle, only CAP_BPF and
//! CAP_NET_ADMIN after attaching, a /metrics listener on 127.0.0.1 that rests when out
//! of descriptors and caps its connections.

use std::{
    net::{Ipv4Addr, SocketAddr, TcpStream},
    os::unix::fs::PermissionsExt,
    time::{Duration, Instant},
};

use pathwatch::lab::netns::wait_for;
use pathwatch_tests::{
    TempDir,
    http::get_in,
    netns::in_netns,
    privileged,
    proc::agent,
    procfs::{clock_ticks_per_s, cpu_ticks, fds_of, status_field},
};

use super::pair;

#[test]
fn an_idle_agent_uses_almost_no_cpu() {
    if !privileged("an_idle_agent_uses_almost_no_cpu") {
        return;
    }
    let dir = TempDir::new("flt9");
    let p = pair(9);
    let mut a = agent(&p.a, &["run", "-i", &p.a_if], &dir.0);
    std::thread::sleep(Duration::from_millis(500));
    let pid = a.pid();
    let hz = clock_ticks_per_s();
    let switches = || status_field(pid, "voluntary_ctxt_switches").and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    let (ticks0, sw0, t0) = (cpu_ticks(pid), switches(), Instant::now());
    std::thread::sleep(Duration::from_secs(3));
    let (ticks1, sw1, elapsed) = (cpu_ticks(pid), switches(), t0.elapsed().as_secs_f64());
    let share = (ticks1 - ticks0) as f64 / hz / elapsed;
    let wakeups = (sw1 - sw0) as f64 / elapsed;
    eprintln!(
        "idle: {:.2} % of a CPU ({} ticks at {hz} Hz in {elapsed:.2} s), {wakeups:.1} wakeups/s",
        share * 100.0,
        ticks1 - ticks0
    );
    assert!(share < 0.05, "idle CPU {:.2} %", share * 100.0);
    // The detectors' 250 ms tick and little else: no busy polling.
    assert!(wakeups < 20.0, "{wakeups:.1} wakeups/s while idle");
    assert_eq!(a.stop(libc::SIGTERM, Duration::from_secs(15)), Some(0), "{}", a.logs());
}

// ---------------------------------------------------------------------------------
// Least privilege.

#[test]
fn after_attaching_the_agent_keeps_only_cap_bpf_and_cap_net_admin() {
    if !privileged("after_attaching_the_agent_keeps_only_cap_bpf_and_cap_net_admin") {
        return;
    }
    let dir = TempDir::new("flt10");
    let p = pair(10);
    let json = dir.0.join("agent.json");
    let mut a = agent(&p.a, &["run", "-i", &p.a_if, "--metrics", "9999", "--json", json.to_str().unwrap()], &dir.0);
    let pid = a.pid();
    let said = "pathwatch: keeping CAP_BPF and CAP_NET_ADMIN";
    assert!(wait_for(Duration::from_secs(3), || a.stderr().contains(said)), "no {said:?}:\n{}", a.logs());
    let caps: Vec<(String, String)> = ["CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"]
        .iter()
        .map(|k| (k.to_string(), status_field(pid, k).unwrap_or_default()))
        .collect();
    eprintln!("capabilities after attaching: {caps:?}");
    let cap = |k: &str| u64::from_str_radix(&caps.iter().find(|(n, _)| n == k).unwrap().1, 16).unwrap();
    const BPF_AND_NET_ADMIN: u64 = (1 << 39) | (1 << 12);
    assert_eq!(cap("CapEff"), BPF_AND_NET_ADMIN, "CapEff");
    assert_eq!(cap("CapPrm"), BPF_AND_NET_ADMIN, "CapPrm");
    assert_eq!(cap("CapInh") | cap("CapAmb"), 0, "inheritable or ambient capabilities");
    assert_eq!(cap("CapBnd") & !BPF_AND_NET_ADMIN, 0, "CapBnd");

    // `--metrics PORT`: 127.0.0.1 only.
    let tcp = String::from_utf8(p.a.exec("cat", &["/proc/net/tcp"]).unwrap().stdout).unwrap();
    let tcp6 = String::from_utf8(p.a.exec("cat", &["/proc/net/tcp6"]).map(|o| o.stdout).unwrap_or_default()).unwrap();
    // 9999 = 0x270F; state 0A = LISTEN.
    let listening: Vec<&str> = tcp
        .lines()
        .chain(tcp6.lines())
        .skip(1)
        .filter(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            f.len() > 3 && f[1].ends_with(":270F") && f[3] == "0A"
        })
        .collect();
    eprintln!("listening on 9999: {listening:?}");
    assert_eq!(listening.len(), 1, "one listener on port 9999:\n{tcp}{tcp6}");
    assert!(listening[0].split_whitespace().nth(1) == Some("0100007F:270F"), "not 127.0.0.1: {}", listening[0]);

    // The JSON file it created: no access for others.
    let mode = std::fs::metadata(&json).unwrap().permissions().mode() & 0o7777;
    eprintln!("--json file mode {mode:o}");
    assert_eq!(mode & 0o007, 0, "the JSON file is open to others: {mode:o}");
    assert_eq!(mode & !0o640, 0, "the JSON file has more than rw-r-----: {mode:o}");
    assert_eq!(mode & 0o600, 0o600, "{mode:o}");
    assert_eq!(a.stop(libc::SIGTERM, Duration::from_secs(15)), Some(0), "{}", a.logs());
}

// ---------------------------------------------------------------------------------
// /metrics out of file descriptors, and held by idle connections.

/// The RLIMIT_NOFILE that leaves `pid` exactly `spare` new descriptors: one more than
/// the `spare`-th lowest free number (descriptors already open above it stay usable).
fn open_files_leaving(pid: u32, spare: usize) -> u64 {
    let open = fds_of(pid);
    let free = (0..).filter(|fd| open.binary_search(fd).is_err()).nth(spare - 1).expect("a free number");
    free + 1
}

/// Sets the soft RLIMIT_NOFILE of `pid` (the hard limit stays); returns the old one.
fn set_open_files(pid: u32, soft: u64) -> u64 {
    let mut old = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: prlimit reads and writes one rlimit each, through valid pointers.
    let rc = unsafe { libc::prlimit(pid as i32, libc::RLIMIT_NOFILE, std::ptr::null(), &mut old) };
    assert_eq!(rc, 0, "prlimit {pid}: {}", std::io::Error::last_os_error());
    let new = libc::rlimit { rlim_cur: soft, rlim_max: old.rlim_max };
    // SAFETY: as above.
    let rc = unsafe { libc::prlimit(pid as i32, libc::RLIMIT_NOFILE, &new, std::ptr::null_mut()) };
    assert_eq!(rc, 0, "prlimit {pid}: {}", std::io::Error::last_os_error());
    old.rlim_cur
}

/// `n` TCP connections to `addr` from inside `ns` that send nothing; closed on drop.
fn idle_connections(ns: &str, addr: SocketAddr, n: usize) -> Vec<TcpStream> {
    in_netns(ns, move || {
        (0..n).map(|_| TcpStream::connect_timeout(&addr, Duration::from_secs(2)).expect("connect")).collect()
    })
}

#[test]
fn the_metrics_server_rests_when_out_of_descriptors_and_caps_its_connections() {
    if !privileged("the_metrics_server_rests_when_out_of_descriptors_and_caps_its_connections") {
        return;
    }
    const PORT: u16 = 9464;
    let cap = pathwatch::run::metrics::MAX_CONNECTIONS as u64;
    let dir = TempDir::new("flt11");
    let p = pair(11);
    let mut a = agent(&p.a, &["run", "-i", &p.a_if, "--metrics", &PORT.to_string()], &dir.0);
    let pid = a.pid();
    let ns = p.a.name().to_string();
    let at = SocketAddr::from((Ipv4Addr::LOCALHOST, PORT));
    let answers = || get_in(&ns, at, "/metrics").is_ok_and(|(status, _)| status == 200);
    assert!(answers(), "{}", a.logs());

    // Two descriptors to spare and four idle connections: the third accept fails
    // with EMFILE, and keeps failing while they are held.
    let limit = open_files_leaving(pid, 2);
    let old = set_open_files(pid, limit);
    let held = idle_connections(&ns, at, 4);
    let said = "warning: metrics: cannot accept connections: Too many open files";
    assert!(wait_for(Duration::from_secs(3), || a.stderr().contains(said)), "no {said:?}:\n{}", a.logs());
    let hz = clock_ticks_per_s();
    let (ticks0, t0) = (cpu_ticks(pid), Instant::now());
    std::thread::sleep(Duration::from_secs(2));
    let share = (cpu_ticks(pid) - ticks0) as f64 / hz / t0.elapsed().as_secs_f64();
    eprintln!("out of descriptors: {:.2} % of a CPU; stderr: {}", share * 100.0, a.stderr().trim());
    assert!(share < 0.05, "the agent spins on a failing accept: {:.1} % of a CPU", share * 100.0);
    assert_eq!(a.stderr().matches(said).count(), 1, "reported more than once:\n{}", a.logs());
    assert!(a.running(), "{}", a.logs());

    // Descriptors back: scrapes are answered again, and the agent says so.
    drop(held);
    set_open_files(pid, old);
    assert!(wait_for(Duration::from_secs(5), answers), "/metrics after the descriptors came back:\n{}", a.logs());
    let back = "notice: metrics: accepting connections again";
    assert!(wait_for(Duration::from_secs(2), || a.stderr().contains(back)), "no {back:?}:\n{}", a.logs());

    // Twenty idle connections: the agent takes `cap` of them, the rest wait in the
    // listen backlog.
    let before = fds_of(pid).len() as u64;
    let held = idle_connections(&ns, at, 20);
    std::thread::sleep(Duration::from_millis(500));
    let taken = (fds_of(pid).len() as u64).saturating_sub(before);
    eprintln!("20 idle connections: the agent holds {taken} (cap {cap})");
    assert!(taken <= cap && taken >= cap / 2, "the agent holds {taken} connections, cap {cap}");
    drop(held);
    assert!(wait_for(Duration::from_secs(5), answers), "/metrics after the idle connections closed:\n{}", a.logs());
    assert_eq!(a.stop(libc::SIGTERM, Duration::from_secs(15)), Some(0), "{}", a.logs());
}
