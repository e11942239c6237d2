//! Rewriting captures for the metamorphic tests: a capture read as Ethernet frames,
//! the transformations that must not change a diagnosis (every frame doubled, every
//! timestamp shifted, unrelated healthy traffic alongside) and one that must (every
//! other DNS response dropped), and the frames written back as a pcap.

use std::path::Path;

use pathwatch::{
    capture::Reader,
    classify::link::{LinkType, to_ethernet},
};

/// One frame: capture time (ns), Ethernet bytes, length on the wire.
#[derive(Clone, Debug)]
pub struct Frame {
    /// Capture time, ns since the Unix epoch.
    pub ts: u64,
    /// The frame as Ethernet (converted from cooked, raw IP or loopback).
    pub data: Vec<u8>,
    /// Length on the wire, adjusted for the link header conversion.
    pub orig_len: u32,
}

/// The frames of a capture as Ethernet, in file order, up to the first damaged
/// record (where replay stops too). Frames whose link header is cut short are kept
/// as they are (replay counts them as `other` either way).
pub fn read(path: &Path) -> Result<Vec<Frame>, String> {
    let mut reader = Reader::open(path).map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    while let Some(frame) = reader.next_frame() {
        let Ok(f) = frame else { break };
        let data = match (f.link, to_ethernet(f.link, f.data)) {
            (LinkType::Ethernet, _) | (_, None) => f.data.to_vec(),
            (_, Some(eth)) => eth.into_owned(),
        };
        let orig_len = (f.orig_len as i64 + data.len() as i64 - f.data.len() as i64).max(data.len() as i64) as u32;
        out.push(Frame { ts: f.ts_ns, data, orig_len });
    }
    Ok(out)
}

/// Writes `frames` as an Ethernet pcap with nanosecond timestamps.
pub fn write(path: &Path, frames: &[Frame]) {
    use pcap_file::pcap::{PcapHeader, PcapPacket, PcapWriter};
    let file = std::io::BufWriter::new(std::fs::File::create(path).expect("create pcap"));
    let header = PcapHeader {
        ts_resolution: pcap_file::TsResolution::NanoSecond,
        datalink: pcap_file::DataLink::ETHERNET,
        snaplen: 262_144,
        ..Default::default()
    };
    let mut w = PcapWriter::with_header(file, header).expect("pcap header");
    for f in frames {
        let pkt = PcapPacket::new(std::time::Duration::from_nanos(f.ts), f.orig_len, &f.data);
        w.write_packet(&pkt).expect("write packet");
    }
}

/// Every frame followed by an identical copy `gap_ns` later (what a SPAN port or
/// `tcpdump -i any` on a bridge records), in time order.
pub fn doubled(frames: &[Frame], gap_ns: u64) -> Vec<Frame> {
    let mut out: Vec<Frame> =
        frames.iter().flat_map(|f| [f.clone(), Frame { ts: f.ts + gap_ns, ..f.clone() }]).collect();
    out.sort_by_key(|f| f.ts);
    out
}

/// Every timestamp moved by `by_ns`.
pub fn shifted(frames: &[Frame], by_ns: u64) -> Vec<Frame> {
    frames.iter().map(|f| Frame { ts: f.ts + by_ns, ..f.clone() }).collect()
}

/// `frames` and `other` in one time-ordered capture.
pub fn merged(frames: &[Frame], other: &[Frame]) -> Vec<Frame> {
    let mut out: Vec<Frame> = frames.iter().chain(other).cloned().collect();
    out.sort_by_key(|f| f.ts);
    out
}

/// Whether an Ethernet frame is a DNS response over UDP (source port 53, QR set).
pub fn is_dns_response(frame: &[u8]) -> bool {
    let Ok(p) = etherparse::SlicedPacket::from_ethernet(frame) else { return false };
    match p.transport {
        Some(etherparse::TransportSlice::Udp(u)) => {
            u.source_port() == 53 && u.payload().get(2).is_some_and(|b| b & 0x80 != 0)
        }
        _ => false,
    }
}

/// `frames` without every second DNS response: a change that must show in the
/// diagnosis of a capture with enough DNS, so the comparison is known to see one.
pub fn every_other_dns_response_dropped(frames: &[Frame]) -> Vec<Frame> {
    let mut n = 0u64;
    frames
        .iter()
        .filter(|f| {
            if !is_dns_response(&f.data) {
                return true;
            }
            n += 1;
            n % 2 == 1
        })
        .cloned()
        .collect()
}

/// Every IPv4 and IPv6 source and destination address of the frames (outer headers).
pub fn addresses(frames: &[Frame]) -> std::collections::HashSet<Vec<u8>> {
    let mut out = std::collections::HashSet::new();
    for f in frames {
        match etherparse::LaxSlicedPacket::from_ethernet(&f.data).map(|p| p.net) {
            Ok(Some(etherparse::LaxNetSlice::Ipv4(ip))) => {
                out.insert(ip.header().source().to_vec());
                out.insert(ip.header().destination().to_vec());
            }
            Ok(Some(etherparse::LaxNetSlice::Ipv6(ip))) => {
                out.insert(ip.header().source().to_vec());
                out.insert(ip.header().destination().to_vec());
            }
            _ => {}
        }
    }
    out
}

/// `other` moved in time to start with `frames`, and cut where `frames` ends (so that
/// it moves no clock past the capture's end).
pub fn placed_within(frames: &[Frame], other: &[Frame]) -> Vec<Frame> {
    let (Some(start), Some(end)) = (frames.iter().map(|f| f.ts).min(), frames.iter().map(|f| f.ts).max()) else {
        return Vec::new();
    };
    let Some(other_start) = other.iter().map(|f| f.ts).min() else { return Vec::new() };
    other.iter().map(|f| Frame { ts: f.ts - other_start + start, ..f.clone() }).filter(|f| f.ts <= end).collect()
}

/// A second octet `b` such that no IPv4 address of the capture is in 100.b.0.0/16
/// (shared address space), so that hosts made up there cannot collide with any host
/// the capture has.
pub fn unused_prefix(frames: &[Frame]) -> u8 {
    let mut used = [false; 256];
    for f in frames {
        let Ok(p) = etherparse::LaxSlicedPacket::from_ethernet(&f.data) else { continue };
        if let Some(etherparse::LaxNetSlice::Ipv4(ip)) = p.net {
            for a in [ip.header().source(), ip.header().destination()] {
                if a[0] == 100 {
                    used[a[1] as usize] = true;
                }
            }
        }
    }
    (64..128u8).find(|b| !used[*b as usize]).expect("a 100.x.0.0/16 prefix unused by the capture")
}

/// Healthy traffic of hosts the capture does not have, inside `[start, end]` (so that
/// it moves no clock past the capture's end; at least 10 ms): `lookups` DNS lookups of distinct names from five clients to one
/// resolver, each answered NOERROR with an address 2 ms later, and one TCP transfer
/// of full-size DF segments, each acknowledged 1 ms later.
pub fn healthy_traffic(start: u64, end: u64, prefix: u8, lookups: u64) -> Vec<Frame> {
    let span = end.saturating_sub(start).max(10_000_000) - 3_000_000;
    let ip = |c: u8, d: u8| [100, prefix, c, d];
    let mut out = Vec::new();
    let mut push = |ts: u64, data: Vec<u8>| out.push(Frame { ts, orig_len: data.len() as u32, data });
    let resolver = ip(53, 53);
    for i in 0..lookups {
        let t = start + span / (lookups + 1) * (i + 1);
        let client = ip(10, 10 + (i % 5) as u8);
        let name = format!("host{i}.noise.example");
        let id = i as u16;
        let port = 20_000 + (i % 30_000) as u16;
        push(t, crate::udp4(client, resolver, port, 53, &crate::dns_query(id, &name)));
        let mut answer = crate::dns_response(id, &name, 0);
        answer[7] = 1; // one answer: name pointer, A, IN, TTL 60, 4 bytes
        answer.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4]);
        answer.extend_from_slice(&ip(80, (i % 200) as u8 + 1));
        push(t + 2_000_000, crate::udp4(resolver, client, 53, port, &answer));
    }
    let (client, server) = (ip(20, 2), ip(20, 1));
    let tcp = |src, dst, sport, dport, seq, ack: Option<u32>, syn: bool, len: usize| {
        let mut b = etherparse::PacketBuilder::ethernet2([2, 0, 0, 0, 0, 3], [2, 0, 0, 0, 0, 4])
            .ipv4(src, dst, 64)
            .tcp(sport, dport, seq, 65_535);
        if syn {
            b = b.syn().options_raw(&[2, 4, 0x05, 0xb4]).expect("MSS option");
        }
        if let Some(a) = ack {
            b = b.ack(a);
        }
        let payload = vec![0x5a; len];
        let mut v = Vec::with_capacity(b.size(len));
        b.write(&mut v, &payload).expect("build TCP frame");
        v
    };
    let t0 = start + 1_000_000;
    push(t0, tcp(client, server, 40_000, 8080, 1000, None, true, 0));
    push(t0 + 500_000, tcp(server, client, 8080, 40_000, 5000, Some(1001), true, 0));
    push(t0 + 1_000_000, tcp(client, server, 40_000, 8080, 1001, Some(5001), false, 0));
    let segments = (span / 200_000_000).clamp(10, 2000);
    for s in 0..segments {
        let t = t0 + 2_000_000 + span / (segments + 2) * s;
        let seq = 1001 + (s as u32) * 1448;
        push(t, tcp(client, server, 40_000, 8080, seq, Some(5001), false, 1448));
        push(t + 1_000_000, tcp(server, client, 8080, 40_000, 5001, Some(seq + 1448), false, 0));
    }
    out.sort_by_key(|f| f.ts);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubling_keeps_order_and_bytes() {
        let f = |ts, b: u8| Frame { ts, data: vec![b; 20], orig_len: 20 };
        let d = doubled(&[f(0, 1), f(2_000, 2)], 3_000);
        let got: Vec<(u64, u8)> = d.iter().map(|f| (f.ts, f.data[0])).collect();
        assert_eq!(got, [(0, 1), (2_000, 2), (3_000, 1), (5_000, 2)]);
    }

    #[test]
    fn healthy_traffic_has_answered_lookups_in_range_and_a_fresh_prefix() {
        let frames = healthy_traffic(1_000_000_000_000, 1_100_000_000_000, 77, 300);
        assert!(frames.iter().all(|f| (1_000_000_000_000..=1_100_000_000_000).contains(&f.ts)));
        assert_eq!(frames.iter().filter(|f| is_dns_response(&f.data)).count(), 300);
        assert_eq!(unused_prefix(&frames), 64, "77 is used, 64 is not");
        assert_eq!(unused_prefix(&healthy_traffic(0, 60_000_000_000, 64, 5)), 65);
        let kept = every_other_dns_response_dropped(&frames);
        assert_eq!(frames.len() - kept.len(), 150);
    }
}
