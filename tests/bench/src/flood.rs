//! Live flood on veth: DNS-shaped UDP from one namespace to another for a fixed time,
//! delivered packets/s measured at the receiver's UDP layer, with no agent, with
//! pathwatch (native XDP on the veth, and skb mode), and with tcpdump writing
//! `udp port 53` to /dev/null instead. pathwatch's DNS count is compared with what
//! was sent, and its lost-event counter and tcpdump's "dropped by kernel" reported.
//! Namespaces `pwbench-tx`/`pwbench-rx`, 198.18.40.0/24 only, every loop bounded.

use std::{
    net::{SocketAddr, UdpSocket},
    os::fd::AsRawFd,
    path::Path,
    time::{Duration, Instant},
};

use pathwatch::lab::netns::{NetNs, veth, wait_for};

/// Receiver address.
pub const RX_ADDR: &str = "198.18.40.2";

/// Sends DNS queries to `dst` for `secs`, in batches of 64 with sendmmsg, at most
/// `pps` per second when given; returns the number sent.
pub fn send(dst: SocketAddr, secs: f64, pps: Option<u64>) -> std::io::Result<u64> {
    let sock = UdpSocket::bind("0.0.0.0:0")?;
    sock.connect(dst)?;
    const BATCH: usize = 64;
    let msgs: Vec<Vec<u8>> = (0..BATCH as u16)
        .map(|i| {
            let mut m = vec![(i >> 8) as u8, i as u8, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 5];
            m.extend_from_slice(format!("h{i:04}").as_bytes());
            m.extend_from_slice(b"\x05flood\x07example\x00\x00\x01\x00\x01");
            m
        })
        .collect();
    let mut iov: Vec<libc::iovec> =
        msgs.iter().map(|m| libc::iovec { iov_base: m.as_ptr() as *mut _, iov_len: m.len() }).collect();
    let mut hdrs: Vec<libc::mmsghdr> = iov
        .iter_mut()
        .map(|v| {
            // SAFETY: mmsghdr is a C struct of integers and pointers: all zeroes (null
            // pointers, zero lengths) is a valid value. The iovec it is pointed at
            // below lives in `iov`, which is neither moved nor dropped before `hdrs`.
            let mut h: libc::mmsghdr = unsafe { std::mem::zeroed() };
            h.msg_hdr.msg_iov = v;
            h.msg_hdr.msg_iovlen = 1;
            h
        })
        .collect();
    let start = Instant::now();
    let end = start + Duration::from_secs_f64(secs);
    let mut sent = 0u64;
    while Instant::now() < end {
        if let Some(pps) = pps {
            let due = (start.elapsed().as_secs_f64() * pps as f64) as u64;
            if sent >= due {
                std::thread::sleep(Duration::from_micros(200));
                continue;
            }
        }
        // SAFETY: `hdrs` holds BATCH headers, each pointing at one iovec of `iov`,
        // which points into one message of `msgs`; all three live, unmoved, until the
        // function returns, and sendmmsg(2) only reads them. The socket is open.
        let n = unsafe { libc::sendmmsg(sock.as_raw_fd(), hdrs.as_mut_ptr(), BATCH as u32, 0) };
        if n > 0 {
            sent += n as u64;
        }
    }
    Ok(sent)
}

/// UDP datagrams the stack of this namespace delivered to sockets or dropped for a
/// full socket buffer (`/proc/net/snmp`: InDatagrams + RcvbufErrors): every packet
/// that made it through the whole receive path, however fast the reader is.
pub fn udp_reached() -> u64 {
    let snmp = std::fs::read_to_string("/proc/net/snmp").unwrap_or_default();
    let mut lines = snmp.lines().filter(|l| l.starts_with("Udp:"));
    let (Some(names), Some(values)) = (lines.next(), lines.next()) else { return 0 };
    let mut total = 0;
    for (n, v) in names.split_whitespace().zip(values.split_whitespace()) {
        if n == "InDatagrams" || n == "RcvbufErrors" {
            total += v.parse::<u64>().unwrap_or(0);
        }
    }
    total
}

/// Receives on `bind` for `secs` (draining with recvmmsg); returns the datagrams the
/// stack delivered meanwhile (see [`udp_reached`]).
pub fn receive(bind: SocketAddr, secs: f64) -> std::io::Result<u64> {
    let sock = UdpSocket::bind(bind)?;
    sock.set_read_timeout(Some(Duration::from_millis(100)))?;
    let before = udp_reached();
    const BATCH: usize = 64;
    let mut bufs = vec![[0u8; 256]; BATCH];
    let mut iov: Vec<libc::iovec> =
        bufs.iter_mut().map(|b| libc::iovec { iov_base: b.as_mut_ptr().cast(), iov_len: b.len() }).collect();
    let mut hdrs: Vec<libc::mmsghdr> = iov
        .iter_mut()
        .map(|v| {
            // SAFETY: mmsghdr is a C struct of integers and pointers: all zeroes (null
            // pointers, zero lengths) is a valid value. The iovec it is pointed at
            // below lives in `iov`, which is neither moved nor dropped before `hdrs`.
            let mut h: libc::mmsghdr = unsafe { std::mem::zeroed() };
            h.msg_hdr.msg_iov = v;
            h.msg_hdr.msg_iovlen = 1;
            h
        })
        .collect();
    let end = Instant::now() + Duration::from_secs_f64(secs);
    while Instant::now() < end {
        // SAFETY: `hdrs` holds BATCH headers, each pointing at one iovec of `iov`,
        // which points at one 256-byte buffer of `bufs` with iov_len 256: recvmmsg(2)
        // writes at most that into each, and all three live, unmoved, until the
        // function returns. A null timeout is allowed; the socket's read timeout
        // bounds each call.
        unsafe { libc::recvmmsg(sock.as_raw_fd(), hdrs.as_mut_ptr(), BATCH as u32, 0, std::ptr::null_mut()) };
    }
    Ok(udp_reached() - before)
}

/// The two namespaces and their veth pair (`fl0` sender side, `fl1` receiver side).
pub struct Testbed {
    /// Sender namespace.
    pub tx: NetNs,
    /// Receiver namespace.
    pub rx: NetNs,
}

/// Builds the testbed.
pub fn testbed() -> std::io::Result<Testbed> {
    let tx = NetNs::new("pwbench-tx")?;
    let rx = NetNs::new("pwbench-rx")?;
    veth(&tx, "fl0", &rx, "fl1")?;
    tx.ip(&["addr", "add", "198.18.40.1/24", "dev", "fl0"])?;
    rx.ip(&["addr", "add", &format!("{RX_ADDR}/24"), "dev", "fl1"])?;
    // Receive buffers large enough that the socket is not the first bottleneck.
    rx.sysctl("net.core.rmem_max", "67108864")?;
    rx.sysctl("net.core.rmem_default", "67108864")?;
    Ok(Testbed { tx, rx })
}

/// One flood: what was sent and delivered.
#[derive(Debug, Clone, Copy, Default)]
pub struct Flood {
    /// Datagrams sent.
    pub sent: u64,
    /// Datagrams the receiving socket got.
    pub delivered: u64,
    /// Seconds.
    pub secs: f64,
}

impl Flood {
    /// Delivered packets per second.
    pub fn pps(&self) -> f64 {
        self.delivered as f64 / self.secs
    }
}

/// Runs one flood between the namespaces with `bench` (this binary).
pub fn flood(tb: &Testbed, bench: &Path, secs: f64, pps: Option<u64>) -> std::io::Result<Flood> {
    let rx_out = tb
        .rx
        .cmd(bench.to_str().unwrap())
        .args(["flood-recv", "--secs", &format!("{}", secs + 1.0)])
        .stdout(std::process::Stdio::piped())
        .spawn()?;
    std::thread::sleep(Duration::from_millis(300));
    let mut send_args = vec!["flood-send".to_string(), "--secs".into(), format!("{secs}")];
    if let Some(p) = pps {
        send_args.extend(["--pps".into(), p.to_string()]);
    }
    let tx = tb.tx.cmd(bench.to_str().unwrap()).args(&send_args).output()?;
    let rx = rx_out.wait_with_output()?;
    let num = |o: &[u8]| String::from_utf8_lossy(o).trim().parse::<u64>().unwrap_or(0);
    Ok(Flood { sent: num(&tx.stdout), delivered: num(&rx.stdout), secs })
}

/// Waits for a log file to contain `needle`.
pub fn wait_log(path: &Path, needle: &str) -> bool {
    wait_for(Duration::from_secs(10), || std::fs::read_to_string(path).unwrap_or_default().contains(needle))
}
