//! The traffic the scenarios make, with real tools, every loop bounded in count and
//! time: `dig` on a schedule, `ping`, a bulk TCP upload with socat, DTLS
//! ClientHellos from `openssl s_client`.

use std::{
    io,
    path::Path,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use super::{
    netns::{NetNs, wait_for},
    signals,
};

/// One `dig` answer.
#[derive(Clone, Debug)]
pub struct Dig {
    /// When the query was sent.
    pub at: Instant,
    /// The response code (`NOERROR`, `SERVFAIL`, …), or `timeout`.
    pub status: String,
    /// Answer records, one per line.
    pub answers: Vec<String>,
}

fn output(cmd: &mut Command) -> io::Result<std::process::Output> {
    cmd.stdin(Stdio::null()).output().map_err(|e| io::Error::new(e.kind(), format!("{cmd:?}: {e}")))
}

/// `dig @server name qtype` from `ns`: one try, one second to answer.
pub fn dig(ns: &NetNs, server: &str, name: &str, qtype: &str) -> io::Result<Dig> {
    dig_from(ns, None, server, name, qtype)
}

/// [`dig`] from address `source` of `ns` (`dig -b`) when given: one namespace can
/// be several clients.
pub fn dig_from(ns: &NetNs, source: Option<&str>, server: &str, name: &str, qtype: &str) -> io::Result<Dig> {
    let at = Instant::now();
    let mut cmd = ns.cmd("dig");
    if let Some(s) = source {
        cmd.args(["-b", s]);
    }
    let out = output(cmd.args([
        "+tries=1",
        "+time=1",
        "+noall",
        "+comments",
        "+answer",
        &format!("@{server}"),
        name,
        qtype,
    ]))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let status = text
        .lines()
        .find_map(|l| l.split("status: ").nth(1))
        .and_then(|s| s.split(',').next())
        .map_or_else(|| "timeout".to_string(), str::to_string);
    let answers = text
        .lines()
        .filter(|l| !l.starts_with(';') && !l.trim().is_empty())
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect();
    Ok(Dig { at, status, answers })
}

/// `count` queries for `name`, one every `every` (on a fixed schedule, so the
/// period does not drift with dig's own run time).
pub fn dig_every(
    ns: &NetNs,
    server: &str,
    name: &str,
    qtype: &str,
    every: Duration,
    count: usize,
) -> io::Result<Vec<Dig>> {
    let start = Instant::now();
    let mut out = Vec::with_capacity(count);
    for i in 0..count {
        signals::sleep_until(start + every * i as u32)?;
        out.push(dig(ns, server, name, qtype)?);
    }
    Ok(out)
}

/// `ping -c count` from `ns`; returns (sent, received).
pub fn ping(ns: &NetNs, target: &str, count: u32, interval: f64) -> io::Result<(u32, u32)> {
    let out = output(ns.cmd("ping").args([
        "-q",
        "-n",
        "-c",
        &count.to_string(),
        "-i",
        &format!("{interval}"),
        "-W",
        "1",
        target,
    ]))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().find(|l| l.contains("packets transmitted")).unwrap_or("");
    let num = |key: &str| -> u32 {
        line.split(',')
            .find(|p| p.contains(key))
            .and_then(|p| p.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    };
    Ok((num("transmitted"), num("received")))
}

/// What a bulk upload achieved.
#[derive(Clone, Debug)]
pub struct Transfer {
    /// Bytes the sender had to send.
    pub bytes: u64,
    /// Bytes the receiver wrote.
    pub received: u64,
    /// Whether every byte arrived before the time limit.
    pub completed: bool,
    /// Seconds until it completed, or until it was stopped.
    pub seconds: f64,
}

/// Uploads `bytes` from `client` to `server_ip:port` (socat, receiver in `server`
/// writing to `dir`), giving up after `limit`. Both ends are stopped by then.
pub fn bulk_upload(
    client: &NetNs,
    server: &NetNs,
    server_ip: &str,
    port: u16,
    bytes: u64,
    limit: Duration,
    dir: &Path,
) -> io::Result<Transfer> {
    let sink = dir.join(format!("upload-{port}.bin"));
    let _ = std::fs::remove_file(&sink);
    let mut receiver = server.spawn(
        "socat receiver",
        "socat",
        &["-u", &format!("TCP-LISTEN:{port},reuseaddr"), &format!("CREATE:{}", sink.display())],
        Some(&dir.join(format!("socat-receiver-{port}.log"))),
    )?;
    let listening = wait_for(Duration::from_secs(5), || {
        server
            .exec("ss", &["-Hltn", &format!("sport = :{port}")])
            .is_ok_and(|o| !String::from_utf8_lossy(&o.stdout).trim().is_empty())
    });
    if !listening {
        return Err(io::Error::other(format!("socat did not listen on {server_ip}:{port}")));
    }
    let start = Instant::now();
    let secs = format!("{:.1}", limit.as_secs_f64());
    let target =
        if server_ip.contains(':') { format!("TCP6:[{server_ip}]:{port}") } else { format!("TCP4:{server_ip}:{port}") };
    let _ = output(client.cmd("timeout").args([
        &secs,
        "socat",
        "-u",
        &format!("OPEN:/dev/zero,readbytes={bytes}"),
        &target,
    ]))?;
    // The sender is done writing; the receiver ends at the sender's FIN once the
    // last byte is in, or not at all when the path swallows the data.
    let left = limit.saturating_sub(start.elapsed()).max(Duration::from_millis(500));
    let exited = receiver.wait_exit(left).is_some();
    let seconds = start.elapsed().as_secs_f64();
    if !exited {
        receiver.stop(libc::SIGTERM, Duration::from_secs(1));
    }
    let received = std::fs::metadata(&sink).map(|m| m.len()).unwrap_or(0);
    let _ = std::fs::remove_file(&sink);
    Ok(Transfer { bytes, received, completed: received == bytes, seconds })
}

/// DTLS 1.2 ClientHellos from `openssl s_client` in `ns` to `server:port`, for at
/// most `limit` (s_client retransmits on its own timer while nothing answers).
pub fn dtls_hellos(ns: &NetNs, server: &str, port: u16, limit: Duration) -> io::Result<()> {
    let _ = output(ns.cmd("timeout").args([
        &format!("{:.1}", limit.as_secs_f64()),
        "openssl",
        "s_client",
        "-dtls1_2",
        "-connect",
        &format!("{server}:{port}"),
    ]))?;
    Ok(())
}
