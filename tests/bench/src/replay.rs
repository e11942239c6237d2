//! Replay throughput: `pathwatch replay` on one core over a generated capture of
//! mixed traffic, beside `tshark -r FILE -Y 'dns || dtls || icmp'` on the same file.

use std::{
    path::Path,
    process::{Command, Stdio},
    time::Duration,
};

use crate::frames;

/// Writes `n` frames of mixed traffic (bulk TCP, UDP, DNS, DTLS, ICMP) to `path`.
pub fn write_capture(path: &Path, n: u32) -> std::io::Result<()> {
    use pcap_file::pcap::{PcapHeader, PcapPacket, PcapWriter};
    let file = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(path)?);
    let mut w = PcapWriter::with_header(
        file,
        PcapHeader { ts_resolution: pcap_file::TsResolution::NanoSecond, ..Default::default() },
    )
    .map_err(std::io::Error::other)?;
    let mix = [
        frames::tcp_nonmatch(),
        frames::tcp_nonmatch(),
        frames::tcp_nonmatch(),
        frames::tcp_nonmatch(),
        frames::udp_nonmatch(),
        frames::dns_query(),
        frames::dns_response(),
        frames::dtls_app_data(),
        frames::dtls_client_hello(),
        frames::icmp_frag_needed(),
    ];
    for i in 0..n {
        let f = &mix[i as usize % mix.len()];
        let pkt =
            PcapPacket::new(Duration::from_nanos(1_700_000_000_000_000_000 + i as u64 * 10_000), f.len() as u32, f);
        w.write_packet(&pkt).map_err(std::io::Error::other)?;
    }
    Ok(())
}

/// CPU seconds (user + system) a command takes pinned to CPU 0, its stdout
/// discarded: CPU time, not wall time, so that other load on a shared machine does
/// not count against it.
pub fn time_pinned(program: &Path, args: &[&str]) -> std::io::Result<f64> {
    let before = children_cpu_secs();
    let status = Command::new("taskset")
        .arg("-c")
        .arg("0")
        .arg(program)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()?;
    if !status.success() {
        return Err(std::io::Error::other(format!("{} {args:?} failed: {status}", program.display())));
    }
    Ok(children_cpu_secs() - before)
}

fn children_cpu_secs() -> f64 {
    // SAFETY: rusage is a C struct of integers: all zeroes is a valid value.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: getrusage(2) writes one rusage through the pointer, which points at
    // `ru`, a live local borrowed exclusively for the call.
    unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut ru) };
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    tv(ru.ru_utime) + tv(ru.ru_stime)
}
