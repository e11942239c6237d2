//! The VPN: ocserv (AnyConnect-compatible: TLS/CSTP on TCP 443, DTLS on UDP 443) in
//! the server namespace and openconnect with a real tun device in the client
//! namespace, configured per LAB-FACTS.md.

use std::{
    io,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use super::{
    netns::{Daemon, NetNs},
    pki::{Pki, VPN_PASSWORD, VPN_USER},
    resolver::tail,
    signals,
};

/// The VPN's port, TCP (TLS) and UDP (DTLS).
pub const VPN_PORT: u16 = 443;
/// The tunnel's address pool (inside 198.18.0.0/15).
pub const TUNNEL_NET: &str = "198.18.100.0";
/// ocserv's own address in the tunnel: what the client pings across it.
pub const TUNNEL_SERVER: &str = "198.18.100.1";

/// ocserv, foreground, password auth.
pub struct Ocserv {
    /// The daemon.
    pub daemon: Daemon,
    /// Its log (`-d 1`).
    pub log: PathBuf,
}

impl Ocserv {
    /// Starts ocserv in `ns` for `listen`:443. With `udp_listen`, DTLS listens on that
    /// address instead while clients are still told to use `listen`:443 — the
    /// misconfiguration where the server's DTLS port is not where it says.
    pub fn start(ns: &NetNs, dir: &Path, pki: &Pki, listen: &str, udp_listen: Option<&str>) -> io::Result<Ocserv> {
        let conf = dir.join("ocserv.conf");
        let udp_host = udp_listen.map(|h| format!("udp-listen-host = {h}\n")).unwrap_or_default();
        std::fs::write(
            &conf,
            format!(
                "auth = \"plain[passwd={passwd}]\"\nlisten-host = {listen}\n{udp_host}tcp-port = {VPN_PORT}\n\
                 udp-port = {VPN_PORT}\nsocket-file = {dir}/ocserv.sock\npid-file = {dir}/ocserv.pid\n\
                 server-cert = {cert}\nserver-key = {key}\nisolate-workers = false\nmax-clients = 8\n\
                 max-same-clients = 8\nkeepalive = 300\ndpd = 60\nmobile-dpd = 300\nswitch-to-tcp-timeout = 25\n\
                 try-mtu-discovery = false\ntls-priorities = \"NORMAL:%SERVER_PRECEDENCE\"\nauth-timeout = 40\n\
                 cookie-timeout = 300\ndeny-roaming = false\nrekey-time = 172800\nrekey-method = ssl\n\
                 use-occtl = false\ndevice = pwvpn\npredictable-ips = true\nipv4-network = {TUNNEL_NET}\n\
                 ipv4-netmask = 255.255.255.0\ndtls-legacy = true\ncisco-client-compat = true\n",
                passwd = pki.passwd.display(),
                dir = dir.display(),
                cert = pki.cert.display(),
                key = pki.key.display(),
            ),
        )?;
        let log = dir.join("ocserv.log");
        let mut daemon = ns.spawn("ocserv", "ocserv", &["-f", "-d", "1", "-c", &conf.to_string_lossy()], Some(&log))?;
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            if text.contains("listening (TCP)") && text.contains("listening (UDP)") {
                return Ok(Ocserv { daemon, log });
            }
            if !daemon.running() || Instant::now() >= deadline {
                return Err(io::Error::other(format!("ocserv did not start: {}", tail(&log, 6))));
            }
            signals::sleep(Duration::from_millis(50))?;
        }
    }
}

/// openconnect, connected (or connecting) to ocserv.
pub struct OpenConnect {
    /// The client process.
    pub daemon: Daemon,
    /// Its log (`-v --timestamp`).
    pub log: PathBuf,
    /// The tun device.
    pub tun: String,
}

/// The `--script`: configures the tun device only (LAB-FACTS.md: the stock
/// vpnc-script wants resolvconf and systemd). IPv6 is off on the tun so that nothing
/// but the tunnel's own IPv4 /24 is ever sent into it.
const SCRIPT: &str = r#"#!/bin/sh
# pathwatch lab: openconnect --script that only configures the tun device.
PATH=/usr/sbin:/usr/bin:/sbin:/bin
case "$reason" in
connect)
    sysctl -q -w "net.ipv6.conf.$TUNDEV.disable_ipv6=1" 2>/dev/null
    ip link set dev "$TUNDEV" up mtu "${INTERNAL_IP4_MTU:-1300}"
    ip addr add "$INTERNAL_IP4_ADDRESS/24" dev "$TUNDEV"
    echo "vpn-script: $TUNDEV $INTERNAL_IP4_ADDRESS/24 mtu ${INTERNAL_IP4_MTU:-1300}"
    ;;
esac
exit 0
"#;

impl OpenConnect {
    /// Starts `openconnect` in `ns` to `https://server/`, the password on its stdin
    /// and the server pinned by its key.
    pub fn start(ns: &NetNs, dir: &Path, pki: &Pki, server: &str, tun: &str) -> io::Result<OpenConnect> {
        let script = dir.join("vpn-script.sh");
        std::fs::write(&script, SCRIPT)?;
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755))?;
        }
        let log = dir.join("openconnect.log");
        let daemon = ns.spawn_with_input(
            "openconnect",
            "openconnect",
            &[
                "-v",
                "--timestamp",
                "--non-inter",
                "--protocol=anyconnect",
                "--user",
                VPN_USER,
                "--passwd-on-stdin",
                "--servercert",
                &pki.pin,
                "--script",
                &script.to_string_lossy(),
                "--interface",
                tun,
                &format!("https://{server}:{VPN_PORT}/"),
            ],
            Some(&log),
            Some(format!("{VPN_PASSWORD}\n").as_bytes()),
        )?;
        Ok(OpenConnect { daemon, log, tun: tun.to_string() })
    }

    /// The log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Log lines containing any of `patterns`.
    pub fn lines_matching(&self, patterns: &[&str]) -> Vec<String> {
        self.log_text().lines().filter(|l| patterns.iter().any(|p| l.contains(p))).map(str::to_string).collect()
    }

    /// The lines that tell the story: TLS up, what the server announced for DTLS,
    /// DTLS up or failing, how the tunnel was configured (not the other headers).
    pub fn story(&self) -> Vec<String> {
        const STORY: &[&str] = &[
            "Connected to HTTPS",
            "X-DTLS-Port",
            "CSTP connected",
            "DTLS",
            "Set up UDP",
            "Configured as",
            "vpn-script:",
        ];
        self.log_text()
            .lines()
            .filter(|l| STORY.iter().any(|p| l.contains(p)))
            .filter(|l| !l.contains("X-DTLS-") || l.contains("X-DTLS-Port"))
            .map(str::to_string)
            .collect()
    }

    /// Waits up to `timeout` for a log line containing any of `patterns`; returns it.
    /// Fails when openconnect exits first.
    pub fn wait_log(&mut self, patterns: &[&str], timeout: Duration) -> io::Result<Option<String>> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(l) = self.lines_matching(patterns).into_iter().next() {
                return Ok(Some(l));
            }
            if !self.daemon.running() {
                return Err(io::Error::other(format!("openconnect exited: {}", tail(&self.log, 6))));
            }
            if Instant::now() >= deadline {
                return Ok(None);
            }
            signals::sleep(Duration::from_millis(50))?;
        }
    }

    /// Waits until the tun device is configured (the script ran).
    pub fn wait_connected(&mut self, timeout: Duration) -> io::Result<()> {
        match self.wait_log(&["vpn-script: "], timeout)? {
            Some(_) => Ok(()),
            None => {
                Err(io::Error::other(format!("openconnect did not connect in {timeout:?}: {}", tail(&self.log, 6))))
            }
        }
    }

    /// Disconnects (SIGTERM: openconnect says BYE to the server and exits).
    pub fn stop(&mut self) {
        self.daemon.stop(libc::SIGTERM, Duration::from_secs(3));
    }
}
