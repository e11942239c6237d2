//! Frames built by hand (no checksums: neither classifier checks them), and one short
//! scenario that gives every detector something to hold: the `config` target runs it
//! under each fuzzed configuration, and it seeds the `detectors` target.

/// Client, resolver / server and router addresses of the scenario (198.18.0.0/15).
pub const CLIENT: [u8; 4] = [198, 18, 0, 2];
/// The server side.
pub const SERVER: [u8; 4] = [198, 19, 0, 1];
/// A router that reports ICMP errors.
pub const ROUTER: [u8; 4] = [198, 18, 0, 1];

const ETH_HEADER: [u8; 14] = [2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1, 0x08, 0x00];

/// Ethernet + IPv4 (IHL 5, DF when `df`) around `l4`.
pub fn ipv4(src: [u8; 4], dst: [u8; 4], proto: u8, df: bool, l4: &[u8]) -> Vec<u8> {
    let total = (20 + l4.len()).min(0xffff) as u16;
    let mut f = ETH_HEADER.to_vec();
    f.extend_from_slice(&[0x45, 0]);
    f.extend_from_slice(&total.to_be_bytes());
    f.extend_from_slice(&[0, 1, if df { 0x40 } else { 0 }, 0, 64, proto, 0, 0]);
    f.extend_from_slice(&src);
    f.extend_from_slice(&dst);
    f.extend_from_slice(l4);
    f
}

/// A UDP datagram (length field honest).
pub fn udp(sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    let mut u = sport.to_be_bytes().to_vec();
    u.extend_from_slice(&dport.to_be_bytes());
    u.extend_from_slice(&((8 + payload.len()).min(0xffff) as u16).to_be_bytes());
    u.extend_from_slice(&[0, 0]);
    u.extend_from_slice(payload);
    u
}

/// A TCP segment with `flags`, sequence number `seq`, options `opts` (padded to 4).
pub fn tcp(sport: u16, dport: u16, seq: u32, flags: u8, opts: &[u8], payload: &[u8]) -> Vec<u8> {
    let mut opts = opts.to_vec();
    opts.resize(opts.len().div_ceil(4) * 4, 0);
    let doff = ((20 + opts.len()) / 4) as u8;
    let mut t = sport.to_be_bytes().to_vec();
    t.extend_from_slice(&dport.to_be_bytes());
    t.extend_from_slice(&seq.to_be_bytes());
    t.extend_from_slice(&[0, 0, 0, 1, doff << 4, flags, 0xff, 0xff, 0, 0, 0, 0]);
    t.extend_from_slice(&opts);
    t.extend_from_slice(payload);
    t
}

/// A DNS message: header with `flags`, one question for `labels`, type A.
pub fn dns(id: u16, flags: u16, labels: &[&[u8]]) -> Vec<u8> {
    let mut m = id.to_be_bytes().to_vec();
    m.extend_from_slice(&flags.to_be_bytes());
    m.extend_from_slice(&[0, 1, 0, 0, 0, 0, 0, 0]);
    for l in labels {
        m.push(l.len() as u8);
        m.extend_from_slice(l);
    }
    m.extend_from_slice(&[0, 0, 1, 0, 1]);
    m
}

/// A DTLS 1.2 record carrying one handshake message of type `hs`.
pub fn dtls_handshake(hs: u8, body_len: u8) -> Vec<u8> {
    let mut msg = vec![hs, 0, 0, body_len, 0, 0, 0, 0, 0, 0, 0, body_len];
    msg.resize(12 + body_len as usize, 0xaa);
    let mut r = vec![22, 0xfe, 0xfd, 0, 0, 0, 0, 0, 0, 0, 0];
    r.extend_from_slice(&(msg.len() as u16).to_be_bytes());
    r.extend_from_slice(&msg);
    r
}

/// An ICMPv4 error of `t`/`code` with `mtu`, quoting the first 28 bytes of `about`'s
/// IP packet.
pub fn icmp4_error(t: u8, code: u8, mtu: u16, about: &[u8]) -> Vec<u8> {
    let mut m = vec![t, code, 0, 0, 0, 0];
    m.extend_from_slice(&mtu.to_be_bytes());
    m.extend_from_slice(&about[14..about.len().min(14 + 28)]);
    m
}

/// Every detector's situation in a few minutes of capture time: a SERVFAIL storm on
/// the known probe, unanswered DTLS ClientHellos with an ICMP port unreachable, TLS
/// reconnects every 60 s for five minutes (a loop: the DTLS is its VPN evidence), a SYN
/// with MSS 1460, a large DF segment retransmitted with no ICMP, and an ICMP
/// frag-needed for another flow.
pub fn scenario(base_ns: u64) -> Vec<(u64, Vec<u8>)> {
    const S: u64 = 1_000_000_000;
    let mus: [&[u8]; 3] = [b"mus", b"cisco", b"com"];
    let mut out = Vec::new();
    for i in 0..6u64 {
        let at = base_ns + i * 15 * S;
        let q = dns(0x100 + i as u16, 0x0100, &mus);
        let r = dns(0x100 + i as u16, 0x8182, &mus);
        out.push((at, ipv4(CLIENT, SERVER, 17, false, &udp(50000, 53, &q))));
        out.push((at + 11 * S, ipv4(SERVER, CLIENT, 17, false, &udp(53, 50000, &r))));
    }
    let hello = ipv4(CLIENT, SERVER, 17, true, &udp(40000, 443, &dtls_handshake(1, 60)));
    for i in 0..3u64 {
        out.push((base_ns + S + (1 << i) * S, hello.clone()));
    }
    out.push((base_ns + 10 * S, ipv4(SERVER, CLIENT, 1, false, &icmp4_error(3, 3, 0, &hello))));
    let mut client_hello = vec![22, 3, 1, 0, 60, 1];
    client_hello.resize(65, 0);
    for i in 0..6u64 {
        out.push((
            base_ns + 2 * S + i * 60 * S,
            ipv4(CLIENT, SERVER, 6, true, &tcp(41000 + i as u16, 443, 1, 0x18, &[], &client_hello)),
        ));
    }
    out.push((base_ns + 3 * S, ipv4(CLIENT, SERVER, 6, true, &tcp(42000, 8443, 7, 0x02, &[2, 4, 0x05, 0xb4], &[]))));
    let big = ipv4(CLIENT, SERVER, 6, true, &tcp(42000, 8443, 8, 0x18, &[], &[0x55; 1400]));
    for i in 0..5u64 {
        out.push((base_ns + 4 * S + i * 200_000_000 * (1 << i), big.clone()));
    }
    let other = ipv4(CLIENT, SERVER, 6, true, &tcp(43000, 80, 8, 0x18, &[], &[0x66; 1400]));
    out.push((base_ns + 5 * S, ipv4(ROUTER, CLIENT, 1, false, &icmp4_error(3, 4, 1400, &other))));
    out.sort_by_key(|(t, _)| *t);
    out
}
