//! Faults ("Hardening"): what the agent does when things go wrong around it.
//!
//! | fault | test |
//! |---|---|
//! | `kill -9` of the agent | [`kill_9_leaves_no_link_program_map_or_pin_and_a_new_agent_starts_at_once`] (live.rs checks `ip link`/`tc` for one interface; here: every link, program and map id the agent held is gone, nothing new under /sys/fs/bpf, and a new agent starts on the same two interfaces and counts) |
//! | two agents on one interface | [`a_second_agent_on_the_same_interface_exits_2_naming_the_holder`] |
//! | an interface deleted and re-created; `-i 'vpns*'` | [`an_interface_that_goes_and_comes_back_counts_on_in_its_slot`], [`a_glob_follows_tun_and_veth_devices_as_they_come_and_go`] |
//! | more interfaces than counter slots, coming and going | [`slots_of_gone_interfaces_are_reused_zeroed_and_their_counts_kept`] |
//! | the consumer stalled (SIGSTOP) with a tiny ring buffer | [`a_stalled_consumer_loses_events_exactly_and_resumes`] |
//! | the JSON target full, or a closed pipe | [`a_full_json_target_is_reported_once_and_the_agent_keeps_counting`], [`json_into_a_closed_pipe_is_reported_and_the_agent_keeps_counting`] |
//! | an adversarial flood with small caps; random names and addresses never reach a metric label | [`an_adversarial_flood_stays_within_the_caps_and_memory`] |
//! | idle | [`an_idle_agent_uses_almost_no_cpu`] |
//! | least privilege | [`after_attaching_the_agent_keeps_only_cap_bpf_and_cap_net_admin`] |
//! | /metrics out of file descriptors; idle connections | [`the_metrics_server_rests_when_out_of_descriptors_and_caps_its_connections`] |
//!
//! Each test builds namespaces of its own (`pwt-flt<N>-a`, where the agent runs, and
//! `pwt-flt<N>-b`, its peer) joined by veth pairs, with addresses in 198.18.0.0/15 only
//! (198.18.6N.0/24, and 198.19.6N.0/24 for a second pair). IPv6 is off in them, so the
//! kernel's own neighbour discovery adds nothing to the counts. Every traffic loop is
//! bounded in count and time; namespaces, the agent and every helper process are
//! removed by name and PID when a test ends, also when it fails.

use std::{
    io::{Read, Write},
    net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpStream, UdpSocket},
    os::{fd::AsRawFd, unix::fs::PermissionsExt},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    thread::JoinHandle,
    time::{Duration, Instant},
};

use pathwatch::lab::netns::{NetNs, veth, wait_for};
use pathwatch_tests::{TempDir, bin, dns_query, json_lines, privileged, samples, unbounded_labels};
use serde_json::Value;

// ---------------------------------------------------------------------------------
// Namespaces, processes, sockets.

/// Two namespaces joined by a veth pair: `a` (the agent's side, `a_if`, 198.18.6N.1)
/// and `b` (the peer, `b_if`, 198.18.6N.2).
struct Pair {
    a: NetNs,
    b: NetNs,
    a_if: String,
    b_if: String,
    a_ip: Ipv4Addr,
    b_ip: Ipv4Addr,
}

/// A namespace with IPv6 off (also on the interfaces created in it later).
fn netns(name: &str) -> NetNs {
    let ns = NetNs::new(name).unwrap();
    ns.sysctl("net.ipv6.conf.all.disable_ipv6", "1").unwrap();
    ns.sysctl("net.ipv6.conf.default.disable_ipv6", "1").unwrap();
    ns
}

fn pair(n: u8) -> Pair {
    let a = netns(&format!("pwt-flt{n}-a"));
    let b = netns(&format!("pwt-flt{n}-b"));
    let (a_if, b_if) = (format!("f{n}a0"), format!("f{n}b0"));
    veth(&a, &a_if, &b, &b_if).unwrap();
    let (a_ip, b_ip) = (Ipv4Addr::new(198, 18, 60 + n, 1), Ipv4Addr::new(198, 18, 60 + n, 2));
    a.ip(&["addr", "add", &format!("{a_ip}/24"), "dev", &a_if]).unwrap();
    b.ip(&["addr", "add", &format!("{b_ip}/24"), "dev", &b_if]).unwrap();
    Pair { a, b, a_if, b_if, a_ip, b_ip }
}

/// A second veth pair between the namespaces of `p`: `f<N>a1` (198.19.6N.1) and
/// `f<N>b1` (198.19.6N.2).
fn second_link(p: &Pair, n: u8) -> (String, Ipv4Addr, Ipv4Addr) {
    let (a_if, b_if) = (format!("f{n}a1"), format!("f{n}b1"));
    veth(&p.a, &a_if, &p.b, &b_if).unwrap();
    let (a_ip, b_ip) = (Ipv4Addr::new(198, 19, 60 + n, 1), Ipv4Addr::new(198, 19, 60 + n, 2));
    p.a.ip(&["addr", "add", &format!("{a_ip}/24"), "dev", &a_if]).unwrap();
    p.b.ip(&["addr", "add", &format!("{b_ip}/24"), "dev", &b_if]).unwrap();
    (a_if, a_ip, b_ip)
}

fn ifindex_in(ns: &NetNs, iface: &str) -> u32 {
    let out = ns.exec("cat", &[&format!("/sys/class/net/{iface}/ifindex")]).unwrap();
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
}

/// Runs `f` on a new thread inside network namespace `ns`: the sockets it opens live
/// there (also after the thread ends). The calling thread stays where it is.
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

/// Sends `n` DNS queries for `name` from `from` (inside `ns`) to `to`:53, `gap` apart.
fn queries(ns: &str, from: Ipv4Addr, to: Ipv4Addr, name: &str, n: usize, gap: Duration) {
    let name = name.to_string();
    in_netns(ns, move || send_queries(from, to, &name, n, gap, 0));
}

/// Sends `n` DNS queries (ids from `id0`) from this thread's namespace; returns `n`.
fn send_queries(from: Ipv4Addr, to: Ipv4Addr, name: &str, n: usize, gap: Duration, id0: u16) -> usize {
    let sock = UdpSocket::bind(SocketAddrV4::new(from, 0)).expect("bind UDP");
    for i in 0..n {
        sock.send_to(&dns_query(id0.wrapping_add(i as u16), name), SocketAddrV4::new(to, 53)).expect("send UDP");
        if !gap.is_zero() {
            std::thread::sleep(gap);
        }
    }
    n
}

/// A UDP socket bound to `addr`:53 in `ns` that never answers: queries to it raise no
/// ICMP port unreachable (an event of its own).
fn silent_sink(ns: &str, addr: Ipv4Addr) -> UdpSocket {
    in_netns(ns, move || UdpSocket::bind(SocketAddrV4::new(addr, 53)).expect("bind the sink"))
}

/// `GET path` from `addr` inside `ns` over HTTP/1.0: (status, body).
fn http_get(ns: &str, addr: SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    let path = path.to_string();
    in_netns(ns, move || {
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
        s.set_read_timeout(Some(Duration::from_secs(10)))?;
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

/// The sum of the samples of metric `name` whose labels include every pair of `want`.
fn metric(text: &str, name: &str, want: &[(&str, &str)]) -> u64 {
    let mut sum = 0.0;
    for line in text.lines().filter(|l| !l.starts_with('#') && !l.trim().is_empty()) {
        let Some((series, value)) = line.rsplit_once(' ') else { continue };
        let (n, labels) = match series.split_once('{') {
            Some((n, rest)) => (n, rest.trim_end_matches('}')),
            None => (series, ""),
        };
        if n != name {
            continue;
        }
        let pairs: Vec<(&str, &str)> =
            labels.split(',').filter_map(|p| p.split_once('=')).map(|(k, v)| (k, v.trim_matches('"'))).collect();
        if want.iter().all(|w| pairs.contains(w)) {
            sum += value.parse::<f64>().unwrap_or(0.0);
        }
    }
    sum as u64
}

/// DNS packets the agent counted at ingress on `iface`, from its /metrics (None when
/// it does not answer).
fn dns_in(ns: &str, port: u16, iface: &str) -> Option<u64> {
    let (status, text) = http_get(ns, SocketAddr::from((Ipv4Addr::LOCALHOST, port)), "/metrics").ok()?;
    (status == 200).then(|| {
        metric(&text, "pathwatch_packets_total", &[("iface", iface), ("direction", "ingress"), ("class", "dns")])
    })
}

/// A process started in a namespace, stdout and stderr in files of their own (or
/// stdout a pipe), killed by its PID when dropped.
struct Proc {
    child: Option<Child>,
    out: PathBuf,
    err: PathBuf,
}

impl Proc {
    /// `wrapper... program args...` inside `ns`. `ip netns exec`, `unshare` and
    /// `sh -c 'exec "$@"'` exec their command, so the PID is the program's own.
    fn spawn(ns: &NetNs, wrapper: &[&str], args: &[&str], dir: &Path, tag: &str, piped_stdout: bool) -> Proc {
        let (out, err) = (dir.join(format!("{tag}.out")), dir.join(format!("{tag}.err")));
        let program = bin();
        let mut c = match wrapper.split_first() {
            Some((w, rest)) => {
                let mut c = ns.cmd(w);
                c.args(rest).arg(&program);
                c
            }
            None => ns.cmd(program.to_str().unwrap()),
        };
        c.args(args).stdin(Stdio::null()).stderr(std::fs::File::create(&err).unwrap());
        if piped_stdout {
            c.stdout(Stdio::piped());
        } else {
            c.stdout(std::fs::File::create(&out).unwrap());
        }
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
            // A stopped process dies of SIGKILL too.
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Starts `pathwatch ARGS` in `ns` (behind `wrapper`) and waits until it says it is
/// watching.
fn agent_with(ns: &NetNs, wrapper: &[&str], args: &[&str], dir: &Path, tag: &str) -> Proc {
    let mut a = Proc::spawn(ns, wrapper, args, dir, tag, false);
    let ready = wait_for(Duration::from_secs(20), || a.stderr().contains("pathwatch: watching") || !a.running());
    assert!(ready && a.running(), "the agent did not start:\n{}", a.logs());
    a
}

fn agent(ns: &NetNs, args: &[&str], dir: &Path) -> Proc {
    agent_with(ns, &[], args, dir, "agent")
}

/// The summary: the last JSON line of `text`.
fn summary_of(text: &str) -> Value {
    let lines = json_lines(text);
    let s = lines.last().cloned().unwrap_or(Value::Null);
    assert_eq!(s["type"], "summary", "the last JSON line is not the summary:\n{text}");
    s
}

fn u(v: &Value) -> u64 {
    v.as_u64().unwrap_or_else(|| panic!("not a count: {v}"))
}

// ---------------------------------------------------------------------------------
// /proc: bpf objects, status, stat.

/// One bpf object a process holds, from /proc/PID/fdinfo.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum BpfFd {
    /// `link_type`, `link_id`, `prog_id`, `ifindex`.
    Link(String, u32, u32, u32),
    /// A program.
    Prog(u32),
    /// `map_id`, `map_type`, `max_entries`.
    Map(u32, u32, u32),
}

fn bpf_fds(pid: u32) -> Vec<BpfFd> {
    let mut out = Vec::new();
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fdinfo")) else { return out };
    for fd in fds.flatten() {
        let info = std::fs::read_to_string(fd.path()).unwrap_or_default();
        let field = |k: &str| info.lines().find_map(|l| l.strip_prefix(k)).map(|v| v.trim().to_string());
        let num =
            |k: &str| field(k).and_then(|v| v.split_whitespace().next().and_then(|n| n.parse().ok())).unwrap_or(0);
        if let Some(t) = field("link_type:") {
            out.push(BpfFd::Link(t, num("link_id:"), num("prog_id:"), num("ifindex:")));
        } else if field("map_id:").is_some() {
            out.push(BpfFd::Map(num("map_id:"), num("map_type:"), num("max_entries:")));
        } else if field("prog_id:").is_some() {
            out.push(BpfFd::Prog(num("prog_id:")));
        }
    }
    out.sort();
    out
}

/// The link types (`xdp`, `tcx`) `pid` holds on `ifindex`.
fn link_types_on(pid: u32, ifindex: u32) -> Vec<String> {
    bpf_fds(pid)
        .into_iter()
        .filter_map(|f| match f {
            BpfFd::Link(t, _, _, i) if i == ifindex => Some(t),
            _ => None,
        })
        .collect()
}

fn watched(pid: u32, ifindex: u32) -> bool {
    let t = link_types_on(pid, ifindex);
    t.iter().any(|t| t == "xdp") && t.iter().any(|t| t == "tcx")
}

/// A line `Key:\tvalue` of /proc/PID/status.
fn status_field(pid: u32, key: &str) -> Option<String> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines().find_map(|l| l.strip_prefix(key).and_then(|r| r.strip_prefix(':'))).map(|v| v.trim().to_string())
}

/// `VmHWM` (peak RSS) in KiB.
fn peak_rss_kib(pid: u32) -> u64 {
    status_field(pid, "VmHWM").and_then(|v| v.split_whitespace().next().and_then(|n| n.parse().ok())).unwrap_or(0)
}

/// utime + stime of `pid`, in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // The command name may hold spaces: fields are counted after its closing paren.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // rest[0] is field 3 (state); utime and stime are fields 14 and 15.
    f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
}

fn bpftool() -> Option<&'static str> {
    ["/usr/sbin/bpftool", "/usr/bin/bpftool", "/sbin/bpftool"].into_iter().find(|p| Path::new(p).exists())
}

/// Whether a bpf object of kind `what` (`prog`, `map`, `link`) with `id` still exists
/// anywhere: asked of bpftool when there is one, else of every process's fdinfo.
fn bpf_object_exists(what: &str, id: u32) -> bool {
    if let Some(tool) = bpftool() {
        return Command::new(tool)
            .args([what, "show", "id", &id.to_string()])
            .output()
            .is_ok_and(|o| o.status.success());
    }
    let Ok(procs) = std::fs::read_dir("/proc") else { return false };
    procs.flatten().filter_map(|p| p.file_name().to_string_lossy().parse::<u32>().ok()).any(|pid| {
        bpf_fds(pid).iter().any(|f| match (what, f) {
            ("prog", BpfFd::Prog(p)) | ("prog", BpfFd::Link(_, _, p, _)) => *p == id,
            ("map", BpfFd::Map(m, _, _)) => *m == id,
            ("link", BpfFd::Link(_, l, _, _)) => *l == id,
            _ => false,
        })
    })
}

/// Everything under `dir`, recursively (bpffs pins).
fn tree(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                out.extend(tree(&p));
            }
            out.push(p);
        }
    }
    out.sort();
    out
}

/// What `ip -d link` shows of XDP on `iface` in `ns`, and `bpftool net` of tcx.
fn shown_attached(ns: &NetNs, iface: &str) -> Vec<String> {
    let mut found = Vec::new();
    let link =
        ns.exec("ip", &["-d", "link", "show", "dev", iface]).map(|o| String::from_utf8_lossy(&o.stdout).into_owned());
    if link.as_ref().is_ok_and(|l| l.contains("xdp")) {
        found.push(format!("ip link: {}", link.unwrap()));
    }
    if let Some(tool) = bpftool() {
        let net = ns
            .exec(tool, &["net", "show", "dev", iface])
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default();
        if net.contains("tcx") || net.lines().any(|l| l.contains(iface) && l.contains("id ")) {
            found.push(format!("bpftool net: {net}"));
        }
    }
    found
}

// ---------------------------------------------------------------------------------
// 1. kill -9.

#[test]
fn kill_9_leaves_no_link_program_map_or_pin_and_a_new_agent_starts_at_once() {
    if !privileged("kill_9_leaves_no_link_program_map_or_pin_and_a_new_agent_starts_at_once") {
        return;
    }
    let dir = TempDir::new("flt1");
    let p = pair(1);
    let (a1, a1_ip, b1_ip) = second_link(&p, 1);
    let pins_before = tree(Path::new("/sys/fs/bpf"));
    let args = ["run", "-i", &p.a_if, "-i", &a1];
    let mut first = agent_with(&p.a, &[], &args, &dir.0, "first");
    let (i0, i1) = (ifindex_in(&p.a, &p.a_if), ifindex_in(&p.a, &a1));
    let held = bpf_fds(first.pid());
    assert!(watched(first.pid(), i0) && watched(first.pid(), i1), "xdp and tcx links on both interfaces: {held:?}");
    let mut ids: Vec<(&str, u32)> = Vec::new();
    for f in &held {
        match f {
            BpfFd::Link(_, l, prog, _) => ids.extend([("link", *l), ("prog", *prog)]),
            BpfFd::Prog(prog) => ids.push(("prog", *prog)),
            BpfFd::Map(m, _, _) => ids.push(("map", *m)),
        }
    }
    ids.sort();
    ids.dedup();
    assert!(ids.iter().any(|(w, _)| *w == "map") && ids.iter().any(|(w, _)| *w == "prog"), "{held:?}");

    first.signal(libc::SIGKILL);
    assert_eq!(first.wait(Duration::from_secs(5)), Some(-1), "kill -9");
    let gone = wait_for(Duration::from_secs(5), || {
        ids.iter().all(|(w, id)| !bpf_object_exists(w, *id))
            && shown_attached(&p.a, &p.a_if).is_empty()
            && shown_attached(&p.a, &a1).is_empty()
    });
    let left: Vec<_> = ids.iter().filter(|(w, id)| bpf_object_exists(w, *id)).collect();
    assert!(
        gone,
        "after kill -9: still there: {left:?}; {:?} {:?}",
        shown_attached(&p.a, &p.a_if),
        shown_attached(&p.a, &a1)
    );
    let pins_after = tree(Path::new("/sys/fs/bpf"));
    let new_pins: Vec<_> = pins_after.iter().filter(|x| !pins_before.contains(x)).collect();
    assert!(new_pins.is_empty(), "new entries under /sys/fs/bpf: {new_pins:?}");
    eprintln!(
        "kill -9: {} bpf objects ({ids:?}) all released; /sys/fs/bpf unchanged ({} entries)",
        ids.len(),
        pins_after.len()
    );

    // A new agent on the same interfaces, at once.
    let t0 = Instant::now();
    let mut second = agent_with(&p.a, &[], &args, &dir.0, "second");
    let took = t0.elapsed();
    assert!(watched(second.pid(), i0) && watched(second.pid(), i1), "{:?}", bpf_fds(second.pid()));
    assert!(!second.stderr().contains("error"), "{}", second.logs());
    eprintln!("the new agent was watching {} ms after it started", took.as_millis());
    assert!(took < Duration::from_secs(10), "took {took:?}");
    queries(p.b.name(), p.b_ip, p.a_ip, "k9.test", 2, Duration::ZERO);
    queries(p.b.name(), b1_ip, a1_ip, "k9.test", 3, Duration::ZERO);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(second.stop(libc::SIGTERM, Duration::from_secs(15)), Some(0), "{}", second.logs());
    let human = second.stdout();
    let summary = human.lines().find(|l| l.starts_with("summary: ")).unwrap_or_else(|| panic!("no summary:\n{human}"));
    assert!(summary.contains("dns_query 5"), "{summary}");
    assert!(shown_attached(&p.a, &p.a_if).is_empty() && shown_attached(&p.a, &a1).is_empty(), "detached after SIGTERM");
}

// ---------------------------------------------------------------------------------
// 2. Two agents on one interface.

#[test]
fn a_second_agent_on_the_same_interface_exits_2_naming_the_holder() {
    if !privileged("a_second_agent_on_the_same_interface_exits_2_naming_the_holder") {
        return;
    }
    let dir = TempDir::new("flt2");
    let p = pair(2);
    // A decoy: an agent started earlier (a lower PID) in another namespace, on an
    // interface with the same ifindex. An ifindex alone does not name the holder.
    let c = netns("pwt-flt2-c");
    veth(&c, "f2c0", &p.b, "f2b9").unwrap();
    let decoy_dir = dir.0.join("decoy");
    std::fs::create_dir(&decoy_dir).unwrap();
    let decoy = agent(&c, &["run", "-i", "f2c0"], &decoy_dir);
    assert_eq!(ifindex_in(&c, "f2c0"), ifindex_in(&p.a, &p.a_if), "the decoy's interface has another ifindex");
    let json = dir.0.join("first.json");
    let mut first = agent(&p.a, &["run", "-i", &p.a_if, "--json", json.to_str().unwrap()], &dir.0);
    let links = bpf_fds(first.pid());

    let mut second = Proc::spawn(&p.a, &[], &["run", "-i", &p.a_if], &dir.0, "second", false);
    let code = second.wait(Duration::from_secs(20));
    let err = second.stderr();
    eprintln!("the second agent: {}", err.trim());
    assert_eq!(code, Some(2), "{}", second.logs());
    let holder = format!("held by pid {} (pathwatch)", first.pid());
    assert!(err.contains(&p.a_if) && err.contains(&holder), "stderr does not say {holder:?}:\n{err}");
    assert!(!err.contains(&format!("pid {} ", decoy.pid())), "named the decoy in another namespace:\n{err}");
    assert!(second.stdout().trim().is_empty(), "{}", second.logs());

    // The first is untouched and counts on.
    assert!(first.running(), "{}", first.logs());
    assert_eq!(bpf_fds(first.pid()), links, "the first agent's links changed");
    queries(p.b.name(), p.b_ip, p.a_ip, "busy.test", 5, Duration::from_millis(10));
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(first.stop(libc::SIGTERM, Duration::from_secs(15)), Some(0), "{}", first.logs());
    let s = summary_of(&std::fs::read_to_string(&json).unwrap());
    assert_eq!(u(&s["interfaces"][&p.a_if]["ingress"]["packets"]["dns"]), 5, "{s}");
    assert_eq!(u(&s["events"]["dns_query"]), 5, "{s}");
    assert!(shown_attached(&p.a, &p.a_if).is_empty(), "detached after SIGTERM");
}

// ---------------------------------------------------------------------------------
// 3. Interfaces that go and come back; globs.

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
    let a = netns("pwt-flt4-a");
    let b = netns("pwt-flt4-b");
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
    assert!(!bpf_fds(pid).iter().any(|f| matches!(f, BpfFd::Link(..))), "links left: {:?}", bpf_fds(pid));
    assert_eq!(agent.stop(libc::SIGTERM, Duration::from_secs(15)), Some(0), "{}", agent.logs());
    for (stream, text) in [("stdout", agent.stdout()), ("stderr", agent.stderr())] {
        assert!(!text.contains('\u{1b}'), "a raw escape reached {stream}:\n{}", agent.logs());
    }
}

// ---------------------------------------------------------------------------------
// 4. The consumer stalled.

#[test]
fn a_stalled_consumer_loses_events_exactly_and_resumes() {
    if !privileged("a_stalled_consumer_loses_events_exactly_and_resumes") {
        return;
    }
    // 100 queries/s for 8.5 s; the agent is stopped from 1.5 s to 6.5 s.
    const STEADY: usize = 850;
    const GAP: Duration = Duration::from_millis(10);
    const AFTER: usize = 8;
    let dir = TempDir::new("flt5");
    let p = pair(5);
    let _sink = silent_sink(p.a.name(), p.a_ip);
    let config = dir.0.join("pathwatch.toml");
    std::fs::write(
        &config,
        "[kernel]\nringbuf_bytes = 65536\n\n[dns]\ntimeout_s = 0.5\n\n[output]\nreport_interval_s = 0.5\n",
    )
    .unwrap();
    let json = dir.0.join("agent.json");
    let mut a = agent(
        &p.a,
        &["run", "-i", &p.a_if, "--config", config.to_str().unwrap(), "--json", json.to_str().unwrap()],
        &dir.0,
    );

    let (from, to) = (p.b_ip, p.a_ip);
    let t0 = Instant::now();
    let steady = spawn_in_netns(p.b.name(), move || {
        // Paced against the clock, so the rate holds whatever the sleeps do; bounded
        // by count and by time.
        let sock = UdpSocket::bind(SocketAddrV4::new(from, 0)).expect("bind UDP");
        let mut sent = 0;
        while sent < STEADY && t0.elapsed() < Duration::from_secs(20) {
            let due = GAP * sent as u32;
            if let Some(wait) = due.checked_sub(t0.elapsed()) {
                std::thread::sleep(wait);
            }
            sock.send_to(&dns_query(sent as u16, "steady.test"), SocketAddrV4::new(to, 53)).expect("send UDP");
            sent += 1;
        }
        sent
    });
    std::thread::sleep(Duration::from_millis(1500));
    a.signal(libc::SIGSTOP);
    let stopped = Instant::now();
    assert!(
        wait_for(Duration::from_secs(2), || status_field(a.pid(), "State").is_some_and(|s| s.starts_with('T'))),
        "not stopped"
    );
    std::thread::sleep(Duration::from_secs(5));
    a.signal(libc::SIGCONT);
    let resumed_after = stopped.elapsed();
    let lines_at_resume = std::fs::read_to_string(&json).unwrap_or_default().lines().count();
    // A new name after the stall: its storm can only come from events read after it.
    let after = spawn_in_netns(p.b.name(), move || {
        send_queries(from, to, "after.test", AFTER, Duration::from_millis(150), 0x8000)
    });
    let sent = steady.join().unwrap() + after.join().unwrap();
    // The last timeouts (0.5 s) and a tick of the detectors.
    std::thread::sleep(Duration::from_millis(1500));
    assert!(a.running(), "{}", a.logs());
    assert_eq!(a.stop(libc::SIGTERM, Duration::from_secs(15)), Some(0), "{}", a.logs());

    let text = std::fs::read_to_string(&json).unwrap();
    let lines = json_lines(&text);
    let s = summary_of(&text);
    let counted = u(&s["interfaces"][&p.a_if]["ingress"]["packets"]["dns"]);
    let decoded = u(&s["events"]["dns_query"]);
    let lost = u(&s["events"]["events_lost"]);
    eprintln!(
        "stalled {:.1} s: sent {sent} queries; the kernel counted {counted}; decoded {decoded}; lost {lost}; kernel stats {}",
        resumed_after.as_secs_f64(),
        s["kernel"]
    );
    assert_eq!(sent, STEADY + AFTER);
    assert_eq!(counted, sent as u64, "the kernel counters are exact whatever userspace does");
    assert!(lost > 0, "the 64 KiB ring buffer never overflowed in a 5 s stall");
    assert_eq!(lost, sent as u64 - decoded, "events_lost == queries sent - dns_query events decoded");
    assert_eq!(u(&s["kernel"]["ringbuf_full"]), lost);
    assert_eq!(u(&s["kernel"]["events_submitted"]), decoded, "every event submitted was decoded");
    assert_eq!(u(&s["undecodable_events"]), 0);
    for (k, v) in s["events"].as_object().unwrap() {
        if k != "dns_query" && k != "events_lost" {
            assert_eq!(v, 0, "event {k}: only queries were sent");
        }
    }

    // Detection resumed: a storm for the name sent after the stall, and the stats
    // lines written after it count on.
    let storm = lines
        .iter()
        .find(|l| l["type"] == "finding" && l["kind"] == "dns_probe_storm" && l["subject"]["qname"] == "after.test");
    assert!(storm.is_some(), "no dns_probe_storm for after.test:\n{}", a.logs());
    eprintln!("after the stall: {}", storm.unwrap()["summary"]);
    let later: Vec<u64> = lines
        .iter()
        .skip(lines_at_resume)
        .filter(|l| l["type"] == "stats")
        .map(|l| u(&l["events"]["dns_query"]))
        .collect();
    assert!(later.len() >= 2 && later.last() > later.first(), "dns_query in stats lines after SIGCONT: {later:?}");
    let stats_lost: Vec<u64> =
        lines.iter().filter(|l| l["type"] == "stats").map(|l| u(&l["events_lost"]["ringbuf"])).collect();
    assert!(stats_lost.windows(2).all(|w| w[0] <= w[1]) && stats_lost.last() == Some(&lost), "{stats_lost:?}");
}

// ---------------------------------------------------------------------------------
// 5. The JSON target full, or gone.

/// Sends DNS queries and checks the agent counted them (from /metrics), that it is
/// still running and still writing stats lines (counted by `stats_lines`).
fn keeps_counting(p: &Pair, a: &mut Proc, port: u16, stats_lines: &dyn Fn(&Proc) -> usize) {
    let before = stats_lines(a);
    queries(p.b.name(), p.b_ip, p.a_ip, "full.test", 4, Duration::ZERO);
    let ns = p.a.name().to_string();
    assert!(
        wait_for(Duration::from_secs(3), || dns_in(&ns, port, &p.a_if) == Some(4)),
        "/metrics after the JSON target failed: {:?}\n{}",
        dns_in(&ns, port, &p.a_if),
        a.logs()
    );
    assert!(
        wait_for(Duration::from_secs(3), || stats_lines(a) >= before + 2),
        "human stats lines stopped:\n{}",
        a.logs()
    );
    assert!(a.running(), "{}", a.logs());
}

#[test]
fn a_full_json_target_is_reported_once_and_the_agent_keeps_counting() {
    if !privileged("a_full_json_target_is_reported_once_and_the_agent_keeps_counting") {
        return;
    }
    const PORT: u16 = 9465;
    let dir = TempDir::new("flt6");
    let p = pair(6);
    let config = dir.0.join("pathwatch.toml");
    std::fs::write(&config, "[output]\nreport_interval_s = 0.2\n").unwrap();
    // A 64 KiB tmpfs in a mount namespace of the agent's own (nothing to unmount
    // afterwards, whatever happens), 56 KiB of it filled first: a few lines fit.
    let mnt = dir.0.join("small");
    std::fs::create_dir(&mnt).unwrap();
    let m = mnt.display().to_string();
    let script = format!(
        "mount -t tmpfs -o size=64k pwt-flt6 '{m}' && dd if=/dev/zero of='{m}/fill' bs=4096 count=14 2>/dev/null && exec \"$@\""
    );
    let wrapper = ["unshare", "--mount", "--propagation", "private", "sh", "-c", &script, "sh"];
    let out = format!("{m}/out.json");
    let port = PORT.to_string();
    let args = ["run", "-i", &p.a_if, "--config", config.to_str().unwrap(), "--metrics", &port, "--json", &out];
    let mut a = agent_with(&p.a, &wrapper, &args, &dir.0, "agent");
    let want = format!("error: cannot write JSON lines to {out}: No space left on device");
    assert!(wait_for(Duration::from_secs(10), || a.stderr().contains(&want)), "no {want:?}:\n{}", a.logs());
    assert!(a.stderr().contains("JSON output stopped, the agent keeps running"), "{}", a.logs());
    assert!(!Path::new(&out).exists(), "the tmpfs is visible outside the agent's mount namespace");
    eprintln!("{}", a.stderr().lines().find(|l| l.contains("cannot write JSON")).unwrap());

    keeps_counting(&p, &mut a, PORT, &|a: &Proc| a.stdout().lines().filter(|l| l.starts_with("stats: ")).count());
    assert_eq!(a.stop(libc::SIGTERM, Duration::from_secs(15)), Some(0), "{}", a.logs());
    assert_eq!(a.stderr().matches("cannot write JSON lines").count(), 1, "reported more than once:\n{}", a.logs());
    let human = a.stdout();
    let summary = human.lines().find(|l| l.starts_with("summary: ")).unwrap_or_else(|| panic!("no summary:\n{human}"));
    assert!(summary.contains("dns 4") && summary.contains("dns_query 4"), "{summary}");
    assert!(!a.stderr().contains("panicked"), "{}", a.logs());
}

#[test]
fn json_into_a_closed_pipe_is_reported_and_the_agent_keeps_counting() {
    if !privileged("json_into_a_closed_pipe_is_reported_and_the_agent_keeps_counting") {
        return;
    }
    const PORT: u16 = 9466;
    let dir = TempDir::new("flt7");
    let p = pair(7);
    let config = dir.0.join("pathwatch.toml");
    std::fs::write(&config, "[output]\nreport_interval_s = 0.2\n").unwrap();
    let port = PORT.to_string();
    let args = ["run", "-i", &p.a_if, "--config", config.to_str().unwrap(), "--metrics", &port, "--json", "-"];
    let mut a = Proc::spawn(&p.a, &[], &args, &dir.0, "agent", true);
    // The reader goes away before the first line.
    drop(a.child.as_mut().unwrap().stdout.take());
    let want = "error: cannot write JSON lines to standard output: Broken pipe";
    assert!(
        wait_for(Duration::from_secs(20), || a.stderr().contains(want) || !a.running()),
        "no {want:?}:\n{}",
        a.logs()
    );
    assert!(a.running(), "the agent died writing into a closed pipe:\n{}", a.logs());
    assert!(a.stderr().contains("JSON output stopped, the agent keeps running"), "{}", a.logs());
    eprintln!("{}", a.stderr().lines().find(|l| l.contains("cannot write JSON")).unwrap());

    // Human lines go to stderr with `--json -`.
    keeps_counting(&p, &mut a, PORT, &|a: &Proc| a.stderr().lines().filter(|l| l.starts_with("stats: ")).count());
    assert_eq!(a.stop(libc::SIGTERM, Duration::from_secs(15)), Some(0), "no clean exit (SIGPIPE?):\n{}", a.logs());
    let err = a.stderr();
    assert_eq!(err.matches("cannot write JSON lines").count(), 1, "reported more than once:\n{err}");
    let summary = err.lines().find(|l| l.starts_with("summary: ")).unwrap_or_else(|| panic!("no summary:\n{err}"));
    assert!(summary.contains("dns_query 4"), "{summary}");
}

// ---------------------------------------------------------------------------------
// 6. An adversarial flood against small caps.

/// xorshift64*: reproducible randomness without a dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// An address in 198.18.0.0/15.
    fn addr(&mut self) -> [u8; 4] {
        let r = self.next();
        [198, 18 + (r & 1) as u8, (r >> 8) as u8, (r >> 16) as u8]
    }

    fn port(&mut self) -> u16 {
        1024 + (self.next() % 60000) as u16
    }

    fn name(&mut self) -> String {
        const ALPHA: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
        let mut label =
            |n: usize| (0..n).map(|_| ALPHA[(self.next() % ALPHA.len() as u64) as usize] as char).collect::<String>();
        format!("{}.{}.flood.test", label(12), label(6))
    }
}

const FLOOD_SRC_MAC: [u8; 6] = [0x02, 0x00, 0x00, 0x00, 0x66, 0x02];
/// Not the agent's interface: the agent's stack drops the frames after XDP and TC has
/// nothing to answer.
const FLOOD_DST_MAC: [u8; 6] = [0x02, 0x00, 0x00, 0x00, 0x66, 0x99];

/// A DNS query for a random name from a random client; the name and the client's
/// address are added to `sent`.
fn dns_frame(r: &mut Rng, dst: [u8; 4], sent: &mut Vec<String>) -> Vec<u8> {
    let (name, src) = (r.name(), r.addr());
    sent.extend([name.clone(), Ipv4Addr::from(src).to_string()]);
    let payload = dns_query(r.next() as u16, &name);
    let b = etherparse::PacketBuilder::ethernet2(FLOOD_SRC_MAC, FLOOD_DST_MAC).ipv4(src, dst, 64).udp(r.port(), 53);
    let mut out = Vec::with_capacity(b.size(payload.len()));
    b.write(&mut out, &payload).unwrap();
    out
}

/// A DF TCP segment of 1360 payload bytes (1400-byte IPv4 packet).
fn tcp_frame(src: [u8; 4], dst: [u8; 4], sport: u16, seq: u32) -> Vec<u8> {
    let mut ip = etherparse::Ipv4Header::new(0, 64, etherparse::IpNumber::TCP, src, dst).unwrap();
    ip.dont_fragment = true;
    let b = etherparse::PacketBuilder::ethernet2(FLOOD_SRC_MAC, FLOOD_DST_MAC)
        .ip(etherparse::IpHeaders::Ipv4(ip, Default::default()))
        .tcp(sport, 443, seq, 64240)
        .ack(1)
        .psh();
    let payload = [0x5au8; 1360];
    let mut out = Vec::with_capacity(b.size(payload.len()));
    b.write(&mut out, &payload).unwrap();
    out
}

/// Sends `frames` out of `iface` (this thread's namespace) with an AF_PACKET socket,
/// in bursts of 64 with a short pause, for at most `limit`; returns how many went.
fn send_frames(iface: &str, frames: &[Vec<u8>], limit: Duration) -> usize {
    let name = std::ffi::CString::new(iface).unwrap();
    // SAFETY: plain socket calls on a descriptor this function owns and closes.
    unsafe {
        let index = libc::if_nametoindex(name.as_ptr());
        assert!(index != 0, "{iface}: {}", std::io::Error::last_os_error());
        let fd = libc::socket(libc::AF_PACKET, libc::SOCK_RAW, 0);
        assert!(fd >= 0, "AF_PACKET: {}", std::io::Error::last_os_error());
        let mut sll: libc::sockaddr_ll = std::mem::zeroed();
        sll.sll_family = libc::AF_PACKET as u16;
        sll.sll_protocol = (libc::ETH_P_IP as u16).to_be();
        sll.sll_ifindex = index as i32;
        sll.sll_halen = 6;
        sll.sll_addr[..6].copy_from_slice(&FLOOD_DST_MAC);
        let t0 = Instant::now();
        let mut sent = 0;
        for (k, f) in frames.iter().enumerate() {
            if t0.elapsed() > limit {
                break;
            }
            let mut tries = 0;
            loop {
                let rc = libc::sendto(
                    fd,
                    f.as_ptr().cast(),
                    f.len(),
                    0,
                    (&raw const sll).cast(),
                    std::mem::size_of::<libc::sockaddr_ll>() as u32,
                );
                if rc == f.len() as isize {
                    sent += 1;
                    break;
                }
                tries += 1;
                if tries > 100 {
                    break;
                }
                std::thread::sleep(Duration::from_millis(1));
            }
            if k % 64 == 63 {
                std::thread::sleep(Duration::from_micros(500));
            }
        }
        libc::close(fd);
        sent
    }
}

#[test]
fn an_adversarial_flood_stays_within_the_caps_and_memory() {
    if !privileged("an_adversarial_flood_stays_within_the_caps_and_memory") {
        return;
    }
    const NAMES: usize = 6000;
    const FLOWS: usize = 4000;
    const RSS_LIMIT_KIB: u64 = 128 * 1024;
    let dir = TempDir::new("flt8");
    let p = pair(8);
    let config = dir.0.join("pathwatch.toml");
    std::fs::write(
        &config,
        "[dns]\nnames_cap = 1000\ntransactions_cap = 2000\n\n[pmtu]\nflows_cap = 1000\nkernel_flow_entries = 1024\n",
    )
    .unwrap();
    let json = dir.0.join("agent.json");
    const PORT: u16 = 9464;
    let port = PORT.to_string();
    let mut a = agent(
        &p.a,
        &[
            "run",
            "-i",
            &p.a_if,
            "--config",
            config.to_str().unwrap(),
            "--json",
            json.to_str().unwrap(),
            "--metrics",
            &port,
        ],
        &dir.0,
    );
    let rss_idle = peak_rss_kib(a.pid());

    // Random queries from random clients, and large DF segments of random flows, each
    // sent twice (the second is a retransmission), interleaved.
    let dst = p.a_ip.octets();
    let mut r = Rng(0x9e37_79b9_7f4a_7c15 ^ u64::from(std::process::id()));
    let mut frames = Vec::with_capacity(NAMES + 2 * FLOWS);
    let mut flows = Vec::with_capacity(FLOWS);
    // Every name and address the flood carries, to look for in the metrics' labels.
    let mut carried = vec![p.a_ip.to_string(), p.b_ip.to_string()];
    for k in 0..NAMES.max(FLOWS) {
        if k < NAMES {
            frames.push(dns_frame(&mut r, dst, &mut carried));
        }
        if k < FLOWS {
            let (src, sport, seq) = (r.addr(), r.port(), r.next() as u32);
            carried.push(Ipv4Addr::from(src).to_string());
            frames.push(tcp_frame(src, dst, sport, seq));
            flows.push((src, sport, seq));
        }
        if k >= 16 && k - 16 < FLOWS {
            // The retransmission, a few flows later.
            let (src, sport, seq) = flows[k - 16];
            frames.push(tcp_frame(src, dst, sport, seq));
        }
    }
    for &(src, sport, seq) in flows.iter().skip(NAMES.max(FLOWS).saturating_sub(16)) {
        frames.push(tcp_frame(src, dst, sport, seq));
    }
    assert_eq!(frames.len(), NAMES + 2 * FLOWS);
    let total = frames.len();
    let b_if = p.b_if.clone();
    let t0 = Instant::now();
    let sent = in_netns(p.b.name(), move || send_frames(&b_if, &frames, Duration::from_secs(30)));
    let took = t0.elapsed();
    eprintln!("flood: {sent} of {total} frames sent in {:.2} s", took.as_secs_f64());
    assert_eq!(sent, total, "the flood was cut short");
    std::thread::sleep(Duration::from_millis(1500));
    // A live scrape: only bounded labels, none of the random names or addresses.
    let (status, text) =
        http_get(p.a.name(), SocketAddr::from((Ipv4Addr::LOCALHOST, PORT)), "/metrics").expect("GET /metrics");
    assert_eq!(status, 200, "{text}");
    let problems = unbounded_labels(&text, &carried);
    assert!(problems.is_empty(), "/metrics labels after the flood:\n{}", problems.join("\n"));
    assert!(metric(&text, "pathwatch_evictions_total", &[("table", "dns_names")]) > 0, "{text}");
    eprintln!(
        "flood: {} samples on /metrics, every label bounded ({} sent values checked)",
        samples(&text).len(),
        carried.len()
    );
    let rss_peak = peak_rss_kib(a.pid());
    let rss_now = status_field(a.pid(), "VmRSS").unwrap_or_default();

    // The kernel's flow table, as bpftool sees it.
    let flows_map = bpf_fds(a.pid()).into_iter().find_map(|f| match f {
        BpfFd::Map(id, 9, 1024) => Some(id),
        _ => None,
    });
    let bpftool_flows = match (bpftool(), flows_map) {
        (Some(tool), Some(id)) => {
            let out = Command::new(tool).args(["-j", "map", "dump", "id", &id.to_string()]).output().unwrap();
            let v: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
            v.as_array().map(|a| a.len() as u64)
        }
        _ => None,
    };
    assert!(a.running(), "{}", a.logs());
    assert_eq!(a.stop(libc::SIGTERM, Duration::from_secs(30)), Some(0), "{}", a.logs());
    let s = summary_of(&std::fs::read_to_string(&json).unwrap());
    let (tracked, evictions) = (&s["tracked"], &s["evictions"]);
    eprintln!(
        "flood: peak RSS {rss_peak} KiB ({rss_idle} KiB before the flood, VmRSS {rss_now} after); classes {}; events {}; kernel {}",
        s["classes"], s["events"], s["kernel"]
    );
    eprintln!("flood: tracked {tracked}; evictions {evictions}; kernel FLOWS by bpftool: {bpftool_flows:?}");

    assert!(rss_peak > 0 && rss_peak < RSS_LIMIT_KIB, "peak RSS {rss_peak} KiB");
    assert_eq!(u(&s["interfaces"][&p.a_if]["ingress"]["packets"]["dns"]), NAMES as u64, "every query counted");
    let decoded_q = u(&s["events"]["dns_query"]);
    let decoded_r = u(&s["events"]["tcp_large_retransmit"]);
    assert!(
        decoded_q > 2000 && decoded_r > 1000,
        "too few events reached the detectors to test the caps: {}",
        s["events"]
    );
    for (table, cap) in [("dns_names", 1000), ("dns_transactions", 2000), ("tcp_flows", 1000)] {
        let held = u(&tracked[table]);
        let evicted = u(&evictions[table]);
        assert!(held <= cap, "{table}: {held} held, cap {cap}");
        assert!(evicted > 0, "{table}: nothing evicted");
    }
    let kernel_flows = u(&tracked["kernel_flows"]);
    assert!(kernel_flows > 0 && kernel_flows <= 1024, "kernel FLOWS holds {kernel_flows}, cap 1024");
    // Every flow was inserted at least once (more if its retransmission came after
    // its eviction): what the map no longer holds was evicted.
    let kernel_evicted = u(&evictions["kernel_flows"]);
    assert!(kernel_evicted + kernel_flows >= FLOWS as u64, "{kernel_evicted} evicted + {kernel_flows} held < {FLOWS}");
    assert_eq!(kernel_evicted + kernel_flows, u(&s["kernel"]["flows_inserted"]));
    if let Some(n) = bpftool_flows {
        assert_eq!(n, kernel_flows, "bpftool and the summary disagree on the FLOWS map");
    }
    assert_eq!(u(&s["kernel"]["flow_insert_failed"]), 0, "an LRU insert failed");
}

// ---------------------------------------------------------------------------------
// 7. Idle.

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
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
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
// 8. Least privilege.

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
// 9. /metrics out of file descriptors, and held by idle connections.

/// The open file descriptors of `pid`, ascending.
fn fds_of(pid: u32) -> Vec<u64> {
    let mut fds: Vec<u64> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_string_lossy().parse().ok())
        .collect();
    fds.sort_unstable();
    fds
}

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
    let answers = || http_get(&ns, at, "/metrics").is_ok_and(|(status, _)| status == 200);
    assert!(answers(), "{}", a.logs());

    // Two descriptors to spare and four idle connections: the third accept fails
    // with EMFILE, and keeps failing while they are held.
    let limit = open_files_leaving(pid, 2);
    let old = set_open_files(pid, limit);
    let held = idle_connections(&ns, at, 4);
    let said = "warning: metrics: cannot accept connections: Too many open files";
    assert!(wait_for(Duration::from_secs(3), || a.stderr().contains(said)), "no {said:?}:\n{}", a.logs());
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
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

// ---------------------------------------------------------------------------------
// 10. More interfaces than counter slots, coming and going.

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
    let a = netns("pwt-flt12-a");
    let b = netns("pwt-flt12-b");
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
        let (status, text) = http_get(&ns, SocketAddr::from((Ipv4Addr::LOCALHOST, PORT)), "/metrics").unwrap();
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
            let went = in_netns(b.name(), move || send_frames(&peer, &frames, Duration::from_secs(5)));
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
    assert_eq!(in_netns(b.name(), move || send_frames(&peer, &frames, Duration::from_secs(5))), 5);
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
    let a = netns("pwt-flt13-a");
    let b = netns("pwt-flt13-b");
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
        assert_eq!(in_netns(b.name(), move || send_frames(&peer, &frames, Duration::from_secs(5))), n);
        sent += n as u64;
    }
    let ns = a.name().to_string();
    let scrape = || http_get(&ns, SocketAddr::from((Ipv4Addr::LOCALHOST, PORT)), "/metrics").unwrap().1;
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
