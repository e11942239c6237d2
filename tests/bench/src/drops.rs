//! What the drop program costs: the kernel's own accounting of BPF programs
//! (`kernel.bpf_stats_enabled`: each program's run count and run time) while the real
//! agent runs on a gateway namespace, under three streams of packets sent by a client
//! namespace, each for the same time at the same rate:
//!
//! - forwarded to a server that reads them, dropped nowhere: the drop program must not
//!   run at all (a packet that is not dropped pays nothing);
//! - dropped by the gateway's nftables input hook as DNS (a class that raises drop
//!   events, most of them suppressed by the rate limit under a flood);
//! - dropped by the same hook as a class that is only counted.
//!
//! Runs and time are deltas of the program's totals over each stream, less what an
//! idle period of the same length shows (drops elsewhere on the host run the program
//! too, and it returns as soon as it sees another namespace).

use std::{
    net::{Ipv4Addr, SocketAddrV4, UdpSocket},
    os::fd::AsRawFd,
    path::Path,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use pathwatch::lab::netns::{NetNs, veth, wait_for};
use serde_json::{Value, json};

const CLIENT: Ipv4Addr = Ipv4Addr::new(198, 18, 31, 2);
const GW: Ipv4Addr = Ipv4Addr::new(198, 18, 31, 1);
const SERVER: Ipv4Addr = Ipv4Addr::new(198, 18, 32, 2);

/// The drop program's run count and total run time (ns), from the kernel.
fn prog_stats() -> Result<(u64, u64)> {
    let out = std::process::Command::new("bpftool").args(["-j", "prog", "show", "name", "pathwatch_drop"]).output()?;
    let v: Value = serde_json::from_slice(&out.stdout).context("bpftool -j prog show")?;
    let progs: Vec<&Value> = match &v {
        Value::Array(a) => a.iter().collect(),
        Value::Object(_) => vec![&v],
        _ => vec![],
    };
    let newest = progs.into_iter().max_by_key(|p| p["id"].as_u64().unwrap_or(0)).context("no pathwatch_drop loaded")?;
    Ok((newest["run_cnt"].as_u64().unwrap_or(0), newest["run_time_ns"].as_u64().unwrap_or(0)))
}

/// Runs `f` on a thread inside namespace `ns`.
fn in_netns<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let path = format!("/var/run/netns/{ns}");
    std::thread::spawn(move || {
        let file = std::fs::File::open(&path).expect("namespace file");
        // SAFETY: setns(2) moves only this thread, into a namespace file we hold open.
        let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(rc, 0, "setns {path}");
        f()
    })
    .join()
    .expect("sender thread")
}

/// Sends `pps` datagrams a second for `secs` from the client to `to`; how many went.
fn send(ns: &str, to: SocketAddrV4, pps: u64, secs: f64) -> u64 {
    in_netns(ns, move || {
        let sock = UdpSocket::bind(SocketAddrV4::new(CLIENT, 0)).expect("bind");
        let payload = pathwatch_dns_query();
        let start = Instant::now();
        let total = (pps as f64 * secs) as u64;
        let mut sent = 0u64;
        while start.elapsed().as_secs_f64() < secs {
            let due = ((start.elapsed().as_secs_f64() * pps as f64) as u64).min(total);
            while sent < due {
                if sock.send_to(&payload, to).is_ok() {
                    sent += 1;
                }
            }
            std::thread::sleep(Duration::from_micros(200));
        }
        sent
    })
}

/// A DNS query for a short name (the DNS class, when sent to port 53).
fn pathwatch_dns_query() -> Vec<u8> {
    let mut q = vec![0x12, 0x34, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0];
    q.extend_from_slice(b"\x04drop\x07example\x00\x00\x01\x00\x01");
    q
}

struct Lab {
    client: NetNs,
    gw: NetNs,
    server: NetNs,
}

fn lab() -> Result<Lab> {
    let client = NetNs::new("pwb-drop-c")?;
    let gw = NetNs::new("pwb-drop-g")?;
    let server = NetNs::new("pwb-drop-s")?;
    veth(&client, "c0", &gw, "g0")?;
    veth(&gw, "g1", &server, "s0")?;
    client.ip(&["addr", "add", "198.18.31.2/24", "dev", "c0"])?;
    gw.ip(&["addr", "add", "198.18.31.1/24", "dev", "g0"])?;
    gw.ip(&["addr", "add", "198.18.32.1/24", "dev", "g1"])?;
    server.ip(&["addr", "add", "198.18.32.2/24", "dev", "s0"])?;
    client.ip(&["route", "add", "default", "via", "198.18.31.1"])?;
    server.ip(&["route", "add", "default", "via", "198.18.32.1"])?;
    gw.sysctl("net.ipv4.ip_forward", "1")?;
    let rules = "table inet pwb {\n chain input { type filter hook input priority 0; \
                 udp dport 53 drop; udp dport 9999 drop; }\n}\n";
    let out = gw.exec_with_input("nft", &["-f", "-"], rules.as_bytes())?;
    if !out.status.success() {
        bail!("nft: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(Lab { client, gw, server })
}

/// One stream: packets sent, and the drop program's runs and ns in the meantime.
fn stream(name: &str, before: (u64, u64), after: (u64, u64), sent: u64, idle: (u64, u64)) -> Value {
    let runs = (after.0 - before.0).saturating_sub(idle.0);
    let ns = (after.1 - before.1).saturating_sub(idle.1);
    json!({
        "stream": name,
        "packets": sent,
        "runs": runs,
        "ns_per_run": if runs > 0 { ns as f64 / runs as f64 } else { 0.0 },
    })
}

/// Runs the benchmark; JSON and the table's lines.
pub fn run(agent: &Path, secs: f64, pps: u64) -> Result<(Value, Vec<String>)> {
    let stats_path = "/proc/sys/kernel/bpf_stats_enabled";
    let old = std::fs::read_to_string(stats_path).unwrap_or_else(|_| "0".into());
    std::fs::write(stats_path, "1").context("enabling kernel.bpf_stats_enabled")?;
    let result = measure(agent, secs, pps);
    let _ = std::fs::write(stats_path, old.trim());
    result
}

fn measure(agent: &Path, secs: f64, pps: u64) -> Result<(Value, Vec<String>)> {
    let lab = lab()?;
    let log = std::env::temp_dir().join("pwb-drop-agent.log");
    let mut a = lab.gw.spawn("pathwatch", agent.to_str().unwrap(), &["run", "-i", "g0", "-i", "g1"], Some(&log))?;
    let ready = wait_for(Duration::from_secs(20), || {
        std::fs::read_to_string(&log).unwrap_or_default().contains("pathwatch: watching g")
    });
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    if !ready || !text.contains("counting this host's own drops") {
        bail!("the agent did not start with its drop program:\n{text}");
    }
    // The server reads what is forwarded to it, so nothing is dropped anywhere.
    let server_ns = lab.server.name().to_string();
    let reader = std::thread::spawn(move || {
        in_netns(&server_ns, move || {
            let sock = UdpSocket::bind(SocketAddrV4::new(SERVER, 7000)).expect("bind server");
            // A receive buffer that holds the whole stream: a datagram the server's
            // socket had no room for would be a drop (in the server's namespace).
            let bytes: libc::c_int = 64 << 20;
            // SAFETY: setsockopt on a socket we own with an int option value.
            unsafe {
                libc::setsockopt(
                    sock.as_raw_fd(),
                    libc::SOL_SOCKET,
                    libc::SO_RCVBUFFORCE,
                    (&bytes as *const libc::c_int).cast(),
                    size_of::<libc::c_int>() as libc::socklen_t,
                )
            };
            sock.set_read_timeout(Some(Duration::from_millis(500))).unwrap();
            let mut buf = [0u8; 2048];
            let mut n = 0u64;
            let deadline = Instant::now() + Duration::from_secs_f64(secs * 2.0 + 5.0);
            // Until the stream has come and gone (half a second without a datagram).
            while Instant::now() < deadline {
                match sock.recv_from(&mut buf) {
                    Ok(_) => n += 1,
                    Err(_) if n > 0 => break,
                    Err(_) => {}
                }
            }
            n
        })
    });
    std::thread::sleep(Duration::from_millis(200));
    let c = lab.client.name().to_string();
    let t0 = prog_stats()?;
    std::thread::sleep(Duration::from_secs_f64(secs));
    let t1 = prog_stats()?;
    let idle = (t1.0 - t0.0, t1.1 - t0.1);
    let fwd_sent = send(&c, SocketAddrV4::new(SERVER, 7000), pps, secs);
    let t2 = prog_stats()?;
    let received = reader.join().expect("reader");
    let t3 = prog_stats()?;
    let dns_sent = send(&c, SocketAddrV4::new(GW, 53), pps, secs);
    let t4 = prog_stats()?;
    let other_sent = send(&c, SocketAddrV4::new(GW, 9999), pps, secs);
    let t5 = prog_stats()?;
    a.stop(libc::SIGINT, Duration::from_secs(10));
    drop(lab);
    let forwarded = stream("forwarded, not dropped", t1, t2, fwd_sent, idle);
    let evented = stream("dropped (netfilter, input), DNS: evented", t3, t4, dns_sent, idle);
    let counted = stream("dropped (netfilter, input), other: counted only", t4, t5, other_sent, idle);
    let value = json!({
        "secs": secs,
        "pps": pps,
        "idle_runs": idle.0,
        "forwarded_received": received,
        "streams": [forwarded, evented, counted],
    });
    let mut table = vec![
        format!("drop program (kfree_skb), {pps} packets/s for {secs} s each, bpf_stats:"),
        format!("  idle: {} runs (drops elsewhere on this host)", idle.0),
    ];
    for s in value["streams"].as_array().unwrap() {
        table.push(format!(
            "  {}: {} packets, {} runs, {:.0} ns a run",
            s["stream"].as_str().unwrap(),
            s["packets"],
            s["runs"],
            s["ns_per_run"].as_f64().unwrap()
        ));
    }
    table.push(format!("  (the server read {received} of the forwarded packets)"));
    Ok((value, table))
}
