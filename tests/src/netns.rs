//! Test networks: two namespaces joined by a veth pair, code run inside a namespace,
//! and traffic sent from there (UDP datagrams, raw Ethernet frames).
//!
//! The live tests (faults, ops) each build their own pairs; this is the one copy of
//! how. `pathwatch::lab::netns` owns the namespaces themselves (deleted by name on
//! drop, every process in them with it). Addresses are the caller's, and must stay
//! in 198.18.0.0/15 (DESIGN.md, "Test network rules"); every sending loop here is
//! bounded in count and time.

use std::{
    net::{Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket},
    os::fd::AsRawFd,
    thread::JoinHandle,
    time::{Duration, Instant},
};

use pathwatch::lab::netns::{NetNs, veth};

/// Two namespaces joined by a veth pair: `a` (the agent's side, `a_if`, `a_ip`) and
/// `b` (the peer, `b_if`, `b_ip`), each address in a /24.
pub struct Pair {
    /// The agent's namespace.
    pub a: NetNs,
    /// The peer's namespace.
    pub b: NetNs,
    /// The veth end in `a`.
    pub a_if: String,
    /// The veth end in `b`.
    pub b_if: String,
    /// `a_if`'s address.
    pub a_ip: Ipv4Addr,
    /// `b_if`'s address.
    pub b_ip: Ipv4Addr,
}

impl Pair {
    /// Joins `a` and `b` with the veth pair `a_if`/`b_if`, addressed `NET.1/24` and
    /// `NET.2/24`.
    pub fn new(a: NetNs, b: NetNs, a_if: &str, b_if: &str, net: [u8; 3]) -> Pair {
        let [x, y, z] = net;
        let (a_ip, b_ip) = (Ipv4Addr::new(x, y, z, 1), Ipv4Addr::new(x, y, z, 2));
        let (a_if, b_if) = (a_if.to_string(), b_if.to_string());
        link(&a, &a_if, a_ip, &b, &b_if, b_ip);
        Pair { a, b, a_if, b_if, a_ip, b_ip }
    }
}

/// A veth pair `a_if` (`a_ip`/24, in `a`) – `b_if` (`b_ip`/24, in `b`), up.
pub fn link(a: &NetNs, a_if: &str, a_ip: Ipv4Addr, b: &NetNs, b_if: &str, b_ip: Ipv4Addr) {
    veth(a, a_if, b, b_if).unwrap();
    a.ip(&["addr", "add", &format!("{a_ip}/24"), "dev", a_if]).unwrap();
    b.ip(&["addr", "add", &format!("{b_ip}/24"), "dev", b_if]).unwrap();
}

/// A namespace with IPv6 off (also on the interfaces created in it later): the
/// kernel's own neighbour discovery then adds nothing to the agent's counts.
pub fn ipv4_only(name: &str) -> NetNs {
    let ns = NetNs::new(name).unwrap();
    ns.sysctl("net.ipv6.conf.all.disable_ipv6", "1").unwrap();
    ns.sysctl("net.ipv6.conf.default.disable_ipv6", "1").unwrap();
    ns
}

/// The ifindex of `iface` inside `ns`.
pub fn ifindex_in(ns: &NetNs, iface: &str) -> u32 {
    let out = ns.exec("cat", &[&format!("/sys/class/net/{iface}/ifindex")]).unwrap();
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
}

/// Runs `f` on a new thread inside network namespace `ns`: the sockets it opens live
/// there (also after the thread ends). The calling thread stays where it is.
pub fn spawn_in_netns<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> JoinHandle<T> {
    let path = format!("/var/run/netns/{ns}");
    std::thread::spawn(move || {
        let file = std::fs::File::open(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        // SAFETY: setns(2) moves only this thread, into a namespace file we hold open.
        let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(rc, 0, "setns {path}: {}", std::io::Error::last_os_error());
        f()
    })
}

/// [`spawn_in_netns`] and wait for its result (a panic in `f` is this thread's).
pub fn in_netns<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    match spawn_in_netns(ns, f).join() {
        Ok(v) => v,
        Err(e) => std::panic::resume_unwind(e),
    }
}

/// Sends UDP datagrams from `from` (inside `ns`) to `to`, `gap` apart; with `reply`,
/// waits that long for one answer to each. Returns the number of answers.
pub fn udp_send(
    ns: &str,
    from: Ipv4Addr,
    to: SocketAddr,
    payloads: Vec<Vec<u8>>,
    reply: Option<Duration>,
    gap: Duration,
) -> usize {
    in_netns(ns, move || udp_send_here(from, to, &payloads, reply, gap))
}

/// [`udp_send`] from this thread's namespace.
pub fn udp_send_here(
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
        if !gap.is_zero() {
            std::thread::sleep(gap);
        }
    }
    answers
}

/// Sends Ethernet `frames` out of `iface` (this thread's namespace) with an
/// AF_PACKET socket, to `dst_mac`, in bursts of 64 with a short pause, for at most
/// `limit`; returns how many went.
pub fn send_frames(iface: &str, dst_mac: [u8; 6], frames: &[Vec<u8>], limit: Duration) -> usize {
    let name = std::ffi::CString::new(iface).unwrap();
    // SAFETY: plain socket calls on a descriptor this function owns and closes; the
    // frame pointers and lengths come from live slices, the address from a zeroed
    // sockaddr_ll of the size passed.
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
        sll.sll_addr[..6].copy_from_slice(&dst_mac);
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
