//! `pmtu_black_hole` end to end through `pathwatch replay`, on captures built here: a
//! 1448-byte DF segment sent and then resent four times at RTO back-off. It is a black
//! hole when the receiver never acknowledges it; not one when the receiver's FIN does
//! (the retransmissions were spurious); and the same black hole, counted the same,
//! when a SPAN port shows every frame twice, 3 µs apart.

use etherparse::{IpHeaders, IpNumber, Ipv4Header, PacketBuilder, TcpHeader};
use pathwatch_tests::{TempDir, json_lines, pathwatch, privileged, write_pcap};
use serde_json::Value;

const CLIENT: [u8; 4] = [198, 18, 0, 2];
const SERVER: [u8; 4] = [198, 19, 0, 2];
const CPORT: u16 = 40000;
const SPORT: u16 = 5001;
const MS: u64 = 1_000_000;
const T0: u64 = 1_700_000_000_000_000_000;
/// Client and server initial sequence numbers.
const CISN: u32 = 1_000;
const SISN: u32 = 9_000;
const SEG: usize = 1448;
/// A small request that gets through first.
const SMALL: usize = 200;
/// The full-size segment that is lost.
const LOST: u32 = CISN + 1 + SMALL as u32;

const FIN: u8 = 0x01;
const SYN: u8 = 0x02;
const ACK: u8 = 0x10;

/// A TCP frame with DF set, from the client when `c2s`.
fn segment(c2s: bool, seq: u32, ack: u32, flags: u8, payload_len: usize) -> Vec<u8> {
    let (src, dst, sport, dport) = if c2s { (CLIENT, SERVER, CPORT, SPORT) } else { (SERVER, CLIENT, SPORT, CPORT) };
    let ip = Ipv4Header::new(0, 64, IpNumber::TCP, src, dst).expect("IPv4 header");
    assert!(ip.dont_fragment, "DF is etherparse's default");
    let mut tcp = TcpHeader::new(sport, dport, seq, 64240);
    (tcp.fin, tcp.syn, tcp.ack) = (flags & FIN != 0, flags & SYN != 0, flags & ACK != 0);
    tcp.acknowledgment_number = ack;
    let b = PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
        .ip(IpHeaders::Ipv4(ip, Default::default()))
        .tcp_header(tcp);
    let mut out = Vec::with_capacity(b.size(payload_len));
    b.write(&mut out, &vec![0x5a; payload_len]).expect("build frame");
    out
}

/// The handshake, a small segment acknowledged, then a full-size one sent and
/// resent four times (0.2, 0.4, 0.8, 1.6 s apart); with `fin`, the server then
/// acknowledges everything and closes.
fn upload(fin: bool) -> Vec<(u64, Vec<u8>)> {
    let mut f = vec![
        (T0, segment(true, CISN, 0, SYN, 0)),
        (T0 + MS, segment(false, SISN, CISN + 1, SYN | ACK, 0)),
        (T0 + 2 * MS, segment(true, CISN + 1, SISN + 1, ACK, 0)),
        (T0 + 3 * MS, segment(true, CISN + 1, SISN + 1, ACK, SMALL)),
        (T0 + 4 * MS, segment(false, SISN + 1, LOST, ACK, 0)),
    ];
    let sent = T0 + 5 * MS;
    f.push((sent, segment(true, LOST, SISN + 1, ACK, SEG)));
    for i in 1..=4u64 {
        f.push((sent + 200 * MS * ((1 << i) - 1), segment(true, LOST, SISN + 1, ACK, SEG)));
    }
    if fin {
        f.push((sent + 3100 * MS, segment(false, SISN + 1, LOST + SEG as u32, FIN | ACK, 0)));
    }
    f
}

/// Every frame, and its copy 3 µs later.
fn doubled(frames: Vec<(u64, Vec<u8>)>) -> Vec<(u64, Vec<u8>)> {
    frames.into_iter().flat_map(|(t, f)| [(t, f.clone()), (t + 3_000, f)]).collect()
}

/// The `pmtu_black_hole` findings of `replay` on `frames` (with `extra` arguments),
/// and the summary line.
fn black_holes(dir: &TempDir, name: &str, frames: Vec<(u64, Vec<u8>)>, extra: &[&str]) -> (Vec<Value>, Value) {
    let path = dir.0.join(name);
    write_pcap(&path, frames);
    let mut args = vec!["replay", "--json", "-"];
    args.extend_from_slice(extra);
    args.push(path.to_str().expect("UTF-8 path"));
    let (code, out, err) = pathwatch(&args);
    assert_eq!(code, 0, "{err}");
    let lines = json_lines(&out);
    let summary = lines.last().cloned().expect("a summary line");
    let holes = lines.into_iter().filter(|l| l["type"] == "finding" && l["kind"] == "pmtu_black_hole").collect();
    (holes, summary)
}

/// The three captures through one classifier: no black hole with the FIN; one, resent
/// 4 times, without; the same one when every frame is doubled.
fn check(extra: &[&str], tag: &str) {
    let dir = TempDir::new(&format!("black-hole-{tag}"));
    let (holes, summary) = black_holes(&dir, "acked.pcap", upload(true), extra);
    assert!(holes.is_empty(), "the server's FIN acknowledged the segment: {holes:#?}");
    assert_eq!(summary["events"]["tcp_fin"], 1, "{summary}");
    assert_eq!(summary["events"]["tcp_large_retransmit"], 4, "{summary}");

    let (holes, _) = black_holes(&dir, "stalled.pcap", upload(false), extra);
    assert_eq!(holes.len(), 1, "{holes:#?}");
    let e = &holes[0]["evidence"];
    assert_eq!(e["retransmissions"], 4, "{e}");
    assert_eq!(e["segment_size"], SEG, "{e}");
    assert_eq!(holes[0]["subject"]["sender"], "198.18.0.2");

    let (twice, summary) = black_holes(&dir, "stalled-doubled.pcap", doubled(upload(false)), extra);
    assert_eq!(twice.len(), 1, "{twice:#?}");
    assert_eq!(twice[0]["evidence"], holes[0]["evidence"], "doubled frames, the same evidence");
    assert_eq!(twice[0]["first_seen"], holes[0]["first_seen"]);

    let (holes, _) = black_holes(&dir, "acked-doubled.pcap", doubled(upload(true)), extra);
    assert!(holes.is_empty(), "{holes:#?}\n{summary}");
}

#[test]
fn a_segment_resent_at_rto_back_off_is_a_black_hole_until_the_receiver_acknowledges_it() {
    check(&[], "user");
}

/// The same through the kernel programs (BPF_PROG_TEST_RUN).
#[test]
fn the_kernel_classifier_gives_the_same_black_holes() {
    if !privileged("the_kernel_classifier_gives_the_same_black_holes") {
        return;
    }
    check(&["--kernel"], "kernel");
}
