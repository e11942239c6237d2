//! Peak memory with the default table caps: after 1 M distinct DNS names, and after
//! 1 M distinct flows (DTLS flows and TCP flows retransmitting large segments). Each
//! runs in a fresh process so that the peak (VmHWM) is its own.

use agent_common::{EventHeader, EventInfo, EventKind, proto::HS_CLIENT_HELLO};

use pathwatch::{
    config::Config,
    counts::EventCounts,
    detect::{Detectors, Emission},
    event::Event,
};

/// Peak resident set size of this process, KiB.
pub fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

fn v4(i: u32) -> [u8; 16] {
    let mut a = [0u8; 16];
    a[..4].copy_from_slice(&[198, 18 + ((i >> 16) & 1) as u8, (i >> 8) as u8, i as u8]);
    a
}

fn header(
    kind: EventKind,
    ts: u64,
    src: [u8; 16],
    dst: [u8; 16],
    sport: u16,
    dport: u16,
    info: EventInfo,
) -> EventHeader {
    EventHeader {
        ts_ns: ts,
        kind: kind as u8,
        ip_version: 4,
        src_addr: src,
        dst_addr: dst,
        src_port: sport,
        dst_port: dport,
        info,
        ..Default::default()
    }
}

/// Feeds `n` queries for distinct names (from 65 536 clients) through the detectors.
pub fn names(n: u32) -> (u64, Detectors) {
    let mut d = Detectors::new(&Config::default(), Emission::Live { interval_ns: 60_000_000_000 });
    let mut counts = EventCounts::default();
    for i in 0..n {
        let name = format!("n{i:07}.flood.example");
        let mut snap = vec![(i >> 8) as u8, i as u8, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0];
        for label in name.split('.') {
            snap.push(label.len() as u8);
            snap.extend_from_slice(label.as_bytes());
        }
        snap.extend_from_slice(&[0, 0, 1, 0, 1]);
        let mut h = header(
            EventKind::Dns,
            1_700_000_000_000_000_000 + i as u64 * 1000,
            v4(i & 0xffff),
            v4(0x1_0001),
            40000,
            53,
            EventInfo::default(),
        );
        h.snap_len = snap.len() as u16;
        let ev = Event { header: h, snap };
        counts.count(&ev);
        d.on_event(&ev);
        let _ = d.take_due();
    }
    (peak_rss_kib(), d)
}

/// Feeds `n` distinct DTLS flows and `n` distinct TCP flows retransmitting a large
/// segment through the detectors.
pub fn flows(n: u32) -> (u64, Detectors) {
    let mut d = Detectors::new(&Config::default(), Emission::Live { interval_ns: 60_000_000_000 });
    for i in 0..n {
        let ts = 1_700_000_000_000_000_000 + i as u64 * 1000;
        let (src, dst, sport) = (v4(i), v4(0x1_0000 | (i >> 16)), (i % 50_000) as u16 + 10_000);
        let hello = EventInfo {
            handshake_mask: 1 << HS_CLIENT_HELLO,
            dtls_records: 1,
            dtls_content_mask: 4,
            ..Default::default()
        };
        d.on_event(&Event { header: header(EventKind::Dtls, ts, src, dst, sport, 443, hello), snap: Vec::new() });
        let retx = EventInfo { seg_len: 1448, retransmits: 1, ..Default::default() };
        d.on_event(&Event {
            header: header(EventKind::TcpLargeRetransmit, ts, src, dst, sport, 5001, retx),
            snap: Vec::new(),
        });
        let _ = d.take_due();
    }
    (peak_rss_kib(), d)
}

/// Writes a capture of `frames` frames to `path`: four of every five a DNS query for
/// one of `names` distinct names (from 65 536 clients), the fifth an ARP request. At
/// 1.25 M frames and 1 M names it is the ~120 MB capture whose replay once held the
/// whole file in memory.
pub fn write_names_capture(path: &std::path::Path, frames: u64, names: u32) -> std::io::Result<u64> {
    use pcap_file::pcap::{PcapHeader, PcapPacket, PcapWriter};
    let file = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(path)?);
    let header = PcapHeader { ts_resolution: pcap_file::TsResolution::NanoSecond, ..Default::default() };
    let mut w = PcapWriter::with_header(file, header).map_err(std::io::Error::other)?;
    let arp = crate::frames::arp();
    let mut name = 0u32;
    for i in 0..frames {
        let frame = if i % 5 == 4 {
            std::borrow::Cow::Borrowed(&arp[..])
        } else {
            let client = v4(name & 0xffff);
            name = (name + 1) % names;
            std::borrow::Cow::Owned(crate::frames::dns_query_from([client[0], client[1], client[2], client[3]], name))
        };
        let ts = std::time::Duration::from_nanos(1_700_000_000_000_000_000 + i * 10_000);
        w.write_packet(&PcapPacket::new(ts, frame.len() as u32, &frame)).map_err(std::io::Error::other)?;
    }
    drop(w);
    Ok(std::fs::metadata(path)?.len())
}

/// Peak RSS (KiB) of `pathwatch replay CAPTURE`, its output discarded, from the
/// kernel's account of the finished child (`wait4`'s `ru_maxrss`).
pub fn replay_peak_rss_kib(pathwatch: &std::path::Path, capture: &std::path::Path) -> std::io::Result<u64> {
    let child = std::process::Command::new(pathwatch)
        .arg("replay")
        .arg(capture)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()?;
    let mut status = 0i32;
    // SAFETY: rusage is a C struct of integers: all zeroes is a valid value.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: wait4(2) on our own child's PID, writing one status and one rusage
    // through pointers to live locals borrowed exclusively for the call. The child
    // is reaped here, so `Child` is not waited on again.
    let pid = unsafe { libc::wait4(child.id() as i32, &mut status, 0, &mut ru) };
    if pid < 0 {
        return Err(std::io::Error::last_os_error());
    }
    if !libc::WIFEXITED(status) || libc::WEXITSTATUS(status) != 0 {
        return Err(std::io::Error::other(format!("pathwatch replay {} failed: status {status}", capture.display())));
    }
    Ok(ru.ru_maxrss as u64)
}
