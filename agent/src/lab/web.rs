//! Ordinary HTTPS, for the scenarios where the agent must stay quiet: a real TLS web
//! server (`openssl s_server -www` with the lab's certificate) and `curl` fetches
//! from the client, each fetch one TCP connection and one TLS session.

use std::{
    io,
    path::Path,
    process::Stdio,
    time::{Duration, Instant},
};

use super::{
    netns::{Daemon, NetNs, wait_for},
    pki::Pki,
    resolver::tail,
};

/// The web server's port.
pub const HTTPS_PORT: u16 = 443;

/// Starts `openssl s_server -www` in `ns` on port [`HTTPS_PORT`] with the lab's
/// server certificate (its subject alternative name is the server's IP), and waits
/// until it listens.
pub fn start_server(ns: &NetNs, pki: &Pki, dir: &Path) -> io::Result<Daemon> {
    let log = dir.join("s_server.log");
    let mut d = ns.spawn(
        "openssl s_server",
        "openssl",
        &[
            "s_server",
            "-www",
            "-quiet",
            "-accept",
            &HTTPS_PORT.to_string(),
            "-cert",
            &pki.cert.to_string_lossy(),
            "-key",
            &pki.key.to_string_lossy(),
        ],
        Some(&log),
    )?;
    let listening = wait_for(Duration::from_secs(5), || {
        ns.exec("ss", &["-Hltn", &format!("sport = :{HTTPS_PORT}")])
            .is_ok_and(|o| !String::from_utf8_lossy(&o.stdout).trim().is_empty())
    });
    if !listening || !d.running() {
        return Err(io::Error::other(format!("openssl s_server did not listen: {}", tail(&log, 4))));
    }
    Ok(d)
}

/// One `curl` fetch.
#[derive(Clone, Debug)]
pub struct Fetch {
    /// When curl started.
    pub at: Instant,
    /// The HTTP status (0: no response).
    pub status: u16,
}

/// `curl https://server/` from `ns` (from address `source` when given), checking
/// the server against the lab CA; at most 3 s.
pub fn fetch(ns: &NetNs, source: Option<&str>, server: &str, ca: &Path) -> io::Result<Fetch> {
    let at = Instant::now();
    let mut cmd = ns.cmd("curl");
    cmd.args(["-sS", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "3", "--cacert"]).arg(ca);
    if let Some(s) = source {
        cmd.args(["--interface", s]);
    }
    let url = if server.contains(':') { format!("https://[{server}]/") } else { format!("https://{server}/") };
    let out = cmd
        .arg(url)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| io::Error::new(e.kind(), format!("curl in {}: {e}", ns.name())))?;
    let status = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap_or(0);
    Ok(Fetch { at, status })
}

/// Gaps between consecutive fetches, in seconds.
pub fn gaps(fetches: &[Fetch]) -> Vec<f64> {
    fetches.windows(2).map(|w| (w[1].at - w[0].at).as_secs_f64()).collect()
}
