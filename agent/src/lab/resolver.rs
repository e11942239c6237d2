//! A real resolver that fails the way the field notes show: unbound, forwarding
//! everything to a dnsmasq that has no upstream servers at all. dnsmasq answers
//! REFUSED, so unbound answers SERVFAIL at once (LAB-FACTS.md) — the seed capture's
//! `mus.cisco.com` symptom. Names in unbound's local zone `pwlab.test` resolve, so the
//! resolver itself is visibly fine. Neither daemon ever talks to anything outside
//! the server namespace: there are no root hints in use (everything is forwarded)
//! and dnsmasq has no upstream.

use std::{
    io,
    path::{Path, PathBuf},
    time::Duration,
};

use super::{
    netns::{Daemon, NetNs, wait_for},
    traffic,
};

/// A name the resolver answers (unbound local data).
pub const OK_NAME: &str = "gw.pwlab.test";
/// What it answers for [`OK_NAME`].
pub const OK_ADDR: &str = "198.18.1.1";
/// dnsmasq's port, on the server namespace's loopback.
const DNSMASQ_PORT: u16 = 5353;

/// unbound in front of a dnsmasq without upstreams.
pub struct Resolver {
    /// unbound (listens on the server address, port 53).
    pub unbound: Daemon,
    /// dnsmasq (127.0.0.1:5353 inside the namespace, no upstream: REFUSED).
    pub dnsmasq: Daemon,
    /// unbound's log.
    pub unbound_log: PathBuf,
    /// dnsmasq's log.
    pub dnsmasq_log: PathBuf,
    /// The address clients ask.
    pub addr: String,
}

impl Resolver {
    /// Starts both daemons in `ns` (files in `dir`), unbound listening on `listen`,
    /// and waits until unbound answers [`OK_NAME`].
    pub fn start(ns: &NetNs, dir: &Path, listen: &str) -> io::Result<Resolver> {
        Resolver::start_with(ns, dir, listen, &[], None)
    }

    /// [`Resolver::start`], with more names in the local zone (`(name, IPv4)`) and,
    /// with `so_rcvbuf`, unbound's UDP receive buffer set that small: a stalled
    /// resolver then queues only the first few queries (answered late when it
    /// resumes) and the kernel drops the rest, as on a busy resolver.
    pub fn start_with(
        ns: &NetNs,
        dir: &Path,
        listen: &str,
        names: &[(&str, &str)],
        so_rcvbuf: Option<u32>,
    ) -> io::Result<Resolver> {
        let dnsmasq_log = dir.join("dnsmasq.log");
        let dnsmasq = ns.spawn(
            "dnsmasq",
            "dnsmasq",
            &[
                "--keep-in-foreground",
                "--conf-file=/dev/null",
                "--no-resolv",
                "--no-hosts",
                "--no-poll",
                "--listen-address=127.0.0.1",
                &format!("--port={DNSMASQ_PORT}"),
                "--bind-interfaces",
                &format!("--pid-file={}", dir.join("dnsmasq.pid").display()),
                "--log-facility=-",
            ],
            Some(&dnsmasq_log),
        )?;
        let conf = dir.join("unbound.conf");
        let local: String = names.iter().map(|(n, a)| format!("  local-data: \"{n}. A {a}\"\n")).collect();
        let rcvbuf = so_rcvbuf.map(|b| format!("  so-rcvbuf: {b}\n")).unwrap_or_default();
        std::fs::write(
            &conf,
            format!(
                "server:\n  interface: {listen}\n  port: 53\n  access-control: 198.18.0.0/15 allow\n  \
                 access-control: fd00::/8 allow\n  do-daemonize: no\n  username: \"\"\n  chroot: \"\"\n  \
                 directory: \"{dir}\"\n  pidfile: \"{dir}/unbound.pid\"\n  use-syslog: no\n  logfile: \"\"\n  \
                 verbosity: 1\n  num-threads: 1\n  module-config: \"iterator\"\n  do-not-query-localhost: no\n  \
                 local-zone: \"pwlab.test.\" static\n  local-data: \"{OK_NAME}. A {OK_ADDR}\"\n{local}{rcvbuf}\
                 forward-zone:\n  name: \".\"\n  forward-addr: 127.0.0.1@{DNSMASQ_PORT}\n",
                dir = dir.display()
            ),
        )?;
        let unbound_log = dir.join("unbound.log");
        let unbound = ns.spawn("unbound", "unbound", &["-d", "-c", &conf.to_string_lossy()], Some(&unbound_log))?;
        let mut r = Resolver { unbound, dnsmasq, unbound_log, dnsmasq_log, addr: listen.to_string() };
        let ready = wait_for(Duration::from_secs(10), || {
            traffic::dig(ns, listen, OK_NAME, "A").is_ok_and(|d| d.status == "NOERROR")
        });
        if !ready || !r.unbound.running() || !r.dnsmasq.running() {
            return Err(io::Error::other(format!(
                "the resolver did not come up: unbound log: {}; dnsmasq log: {}",
                tail(&r.unbound_log, 5),
                tail(&r.dnsmasq_log, 5)
            )));
        }
        Ok(r)
    }
}

/// UDP datagrams the kernel of `ns` dropped because a socket's receive buffer was
/// full (`RcvbufErrors` of `/proc/net/snmp`, which is per namespace).
pub fn udp_rcvbuf_errors(ns: &NetNs) -> u64 {
    let snmp = ns.exec("cat", &["/proc/net/snmp"]).map(|o| String::from_utf8_lossy(&o.stdout).into_owned());
    let snmp = snmp.unwrap_or_default();
    let mut udp = snmp.lines().filter(|l| l.starts_with("Udp: "));
    let (Some(names), Some(values)) = (udp.next(), udp.next()) else { return 0 };
    names
        .split_whitespace()
        .zip(values.split_whitespace())
        .find(|(n, _)| *n == "RcvbufErrors")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0)
}

/// The last `n` lines of a log file, joined with " | ".
pub fn tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join(" | ")
}
