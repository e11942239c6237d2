//! The shared header walk (`agent_common::wire::walk`, what the kernel programs and
//! replay run) against etherparse, a parser that shares no code with it: every frame
//! of every capture in `tests/pcaps` (the repository's copy of `../shared/pcaps`).
//!
//! etherparse says where the IP header and the transport header are, which protocol
//! that is and where its payload is; the class is then decided here from etherparse's
//! fields by the rules DESIGN.md states, written again without the walk. Frames that
//! etherparse cannot take as far (PPPoE, which it does not parse; a header cut by the
//! capture) are compared as far as it got. Frames the walk decapsulated (a tunnel:
//! etherparse reads only the outer packet) are counted and left out; the tunnels are
//! checked by the kernel tests' crafted frames and `../formats`' captures against tshark.

use agent_common::{
    Class, FlowState, KernelConfig,
    event::IP_FLAG_DF,
    proto::{
        IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_TCP, IPPROTO_UDP, is_dtls_content_type, is_dtls_version,
        is_ipv6_skippable_ext,
    },
    wire::{self, LargeSegments, Parsed},
};
use etherparse::{
    Icmpv4Slice, Icmpv6Slice, Ipv6Extensions, LaxNetSlice, LaxSlicedPacket, TcpSlice, TransportSlice, UdpSlice,
};
use pathwatch::{capture::Capture, classify::link::to_ethernet};
use pathwatch_tests::{all_pcaps, rel};

/// Every segment is new: the class does not depend on the flow table.
struct NoFlows;

impl LargeSegments for NoFlows {
    fn on_large_segment(&mut self, _: u32, _: u64, _: u32, _: u16) -> Option<FlowState> {
        None
    }
}

/// What etherparse found, as offsets in the frame.
#[derive(Debug, Default, PartialEq, Eq)]
struct Layers {
    ip_version: u8,
    l3_off: usize,
    ip_len: u32,
    df: bool,
    /// The transport protocol and header offset, when the IP payload is the start of
    /// one (not a later fragment).
    l4: Option<(u8, usize)>,
    /// The transport payload, when etherparse sliced the transport header.
    payload: Option<(usize, usize)>,
    class: Option<Class>,
}

fn offset(frame: &[u8], part: &[u8]) -> usize {
    part.as_ptr() as usize - frame.as_ptr() as usize
}

/// Reads `frame` with etherparse; `None` when it finds no IP header.
fn etherparse_layers(frame: &[u8], cfg: &KernelConfig) -> Option<Layers> {
    let pkt = LaxSlicedPacket::from_ethernet(frame).ok()?;
    let mut l = Layers::default();
    let (payload, first_fragment) = match pkt.net.as_ref()? {
        LaxNetSlice::Ipv4(ip) => {
            let h = ip.header();
            (l.ip_version, l.l3_off, l.ip_len, l.df) =
                (4, offset(frame, h.slice()), h.total_len().into(), h.dont_fragment());
            (ip.payload(), h.fragments_offset().value() == 0)
        }
        LaxNetSlice::Ipv6(ip) => {
            let h = ip.header();
            (l.ip_version, l.l3_off, l.ip_len, l.df) =
                (6, offset(frame, h.slice()), 40 + u32::from(h.payload_length()), true);
            // The fragment header read again from the bytes: etherparse 0.21's iterator
            // over a lax slice's extensions reads past a header cut by the capture
            // (undefined behaviour, caught by the standard library's checks on
            // tests/pcaps/misc/tcpdump-ip6-frag-asan.pcap).
            let exts = Ipv6Extensions::from_slice_lax(h.next_header(), &frame[l.l3_off + 40..]).0;
            (ip.payload(), exts.fragment.is_none_or(|f| f.fragment_offset.value() == 0))
        }
        LaxNetSlice::Arp(_) => return None,
    };
    // An extension header as the payload's protocol: etherparse could not step over it.
    let l4 = first_fragment && !is_ipv6_skippable_ext(payload.ip_number.0);
    if l4 {
        l.l4 = Some((payload.ip_number.0, offset(frame, payload.payload)));
    }
    // etherparse slices no transport header in a fragment or in an IP packet cut short
    // by the capture; those are sliced here from the IP payload.
    let transport = match (&pkt.transport, l4) {
        (Some(t), _) => Some(t.clone()),
        (None, true) => slice_transport(payload.ip_number.0, payload.payload),
        (None, false) => None,
    };
    let dns = |s: u16, d: u16| cfg.is_dns_port(s) || cfg.is_dns_port(d);
    let class = match &transport {
        Some(TransportSlice::Udp(u)) => {
            let p = u.payload();
            l.payload = Some((offset(frame, p), offset(frame, p) + p.len()));
            if dns(u.source_port(), u.destination_port()) {
                Some(Class::Dns)
            } else {
                // The datagram as the UDP header claims it, against the bytes captured.
                let claimed = (u.length() as usize).saturating_sub(8);
                is_dtls_chain(p, claimed).then_some(Class::Dtls)
            }
        }
        Some(TransportSlice::Tcp(t)) => {
            let p = t.payload();
            l.payload = Some((offset(frame, p), offset(frame, p) + p.len()));
            if dns(t.source_port(), t.destination_port()) {
                Some(Class::Dns)
            } else if p.len() >= 5 && p[0] == 22 && p[1] == 3 && p[2] <= 4 {
                Some(Class::Tls)
            } else if t.syn() {
                Some(Class::TcpSyn)
            } else {
                None
            }
        }
        Some(TransportSlice::Icmpv4(i)) => matches!(i.type_u8(), 3 | 11 | 12).then_some(Class::IcmpError),
        Some(TransportSlice::Icmpv6(i)) => (1..=4).contains(&i.type_u8()).then_some(Class::IcmpError),
        _ => None,
    };
    // What a packet is when nothing above claims it: large if it may not be fragmented.
    let large = l.df && l.ip_len > cfg.large_packet_bytes;
    let settled = transport.is_some()
        || !l4
        || !matches!(payload.ip_number.0, IPPROTO_TCP | IPPROTO_UDP | IPPROTO_ICMP | IPPROTO_ICMPV6);
    l.class = settled.then(|| class.unwrap_or(if large { Class::LargeDf } else { Class::Other }));
    Some(l)
}

/// The transport header at the start of `bytes`, sliced by etherparse.
fn slice_transport(proto: u8, bytes: &[u8]) -> Option<TransportSlice<'_>> {
    match proto {
        IPPROTO_UDP => UdpSlice::from_slice_lax(bytes).ok().map(TransportSlice::Udp),
        IPPROTO_TCP => TcpSlice::from_slice(bytes).ok().map(TransportSlice::Tcp),
        IPPROTO_ICMP => Icmpv4Slice::from_slice(bytes).ok().map(TransportSlice::Icmpv4),
        IPPROTO_ICMPV6 => Icmpv6Slice::from_slice(bytes).ok().map(TransportSlice::Icmpv6),
        _ => None,
    }
}

/// DTLS by Wireshark's rule: record headers (a content type 20-25, a DTLS version)
/// chained from the start of `payload` to exactly `claimed` bytes, or past the end of a
/// capture cut short; at most as many records as the walk reads.
fn is_dtls_chain(payload: &[u8], claimed: usize) -> bool {
    let mut off = 0;
    for _ in 0..agent_common::proto::MAX_DTLS_RECORDS {
        let Some(h) = payload.get(off..off + 13) else { break };
        if !is_dtls_content_type(h[0]) || !is_dtls_version(u16::from_be_bytes([h[1], h[2]])) {
            return false;
        }
        off += 13 + u16::from_be_bytes([h[11], h[12]]) as usize;
        if off == claimed {
            return true;
        }
        if off > claimed {
            return false;
        }
    }
    off > 0 && payload.len() < claimed && off >= payload.len()
}

/// The walk's view of the same frame, in the same terms.
fn walk_layers(p: &Parsed, theirs: &Layers) -> Layers {
    let reached_l4 = p.l4_off != 0;
    let transport = matches!(p.l4_proto, IPPROTO_TCP | IPPROTO_UDP) && reached_l4 && theirs.payload.is_some();
    Layers {
        ip_version: p.ip_version,
        l3_off: p.l3_off,
        ip_len: p.ip_len,
        df: p.ip_flags & IP_FLAG_DF != 0,
        l4: reached_l4.then_some((p.l4_proto, p.l4_off)),
        payload: transport.then_some((p.payload_off, p.payload_end)),
        class: theirs.class.map(|_| p.class),
    }
}

#[test]
fn walk_agrees_with_etherparse_on_every_frame() {
    let cfg = KernelConfig::new();
    let (mut frames, mut compared, mut with_transport, mut classes) = (0u64, 0u64, 0u64, 0u64);
    let mut tunneled = 0u64;
    let mut problems = Vec::new();
    for path in all_pcaps() {
        let name = rel(&path);
        let capture = Capture::open(&path).unwrap();
        for frame in capture.frames().unwrap() {
            let frame = frame.unwrap();
            let Some(eth) = to_ethernet(frame.link, &frame.data) else { continue };
            frames += 1;
            let p = wire::walk(&&eth[..], &cfg, &mut NoFlows);
            if p.tunnels > 0 {
                tunneled += 1;
                continue;
            }
            let Some(theirs) = etherparse_layers(&eth, &cfg) else { continue };
            if p.ip_version == 0 {
                // More VLAN tags than the walk reads (etherparse takes three).
                continue;
            }
            let ours = walk_layers(&p, &theirs);
            compared += 1;
            with_transport += u64::from(ours.payload.is_some());
            classes += u64::from(ours.class.is_some());
            if ours != theirs {
                problems.push(format!(
                    "{name} frame {}:\n    walk       {ours:?}\n    etherparse {theirs:?}",
                    frame.number
                ));
            }
        }
    }
    eprintln!(
        "{frames} frames: {compared} compared ({with_transport} to the transport payload, {classes} by class), \
         {tunneled} inside a tunnel left out"
    );
    assert!(compared > frames / 2, "most frames are IP that etherparse reads");
    assert!(classes > 0 && with_transport > 0);
    assert!(
        problems.is_empty(),
        "{} differences:\n{}",
        problems.len(),
        problems.iter().take(20).cloned().collect::<Vec<_>>().join("\n")
    );
}

/// The fast path ([`wire::fast`]) gives the full walk's answer, field for field, on
/// every frame it settles: the shared captures, and the formats and wild corpora where
/// they are assembled (real traffic of every shape, including the cut and the odd).
#[test]
fn the_fast_path_gives_the_full_walks_answer_on_every_frame_it_settles() {
    let cfg = KernelConfig::new();
    let mut paths = all_pcaps();
    for (name, env) in [("formats", "PATHWATCH_FORMATS"), ("wild", "PATHWATCH_WILD")] {
        if let Some(dir) = pathwatch_tests::wild::candidates_of(name, env)
            .into_iter()
            .find(|d| !pathwatch_tests::wild::captures_in(d).is_empty())
        {
            paths.extend(pathwatch_tests::wild::captures_in(&dir));
        }
    }
    let (mut frames, mut settled) = (0u64, 0u64);
    let mut problems = Vec::new();
    for path in &paths {
        let Ok(capture) = Capture::open(path) else { continue };
        let Ok(iter) = capture.frames() else { continue };
        for frame in iter {
            let Ok(frame) = frame else { break };
            let Some(eth) = to_ethernet(frame.link, &frame.data) else { continue };
            frames += 1;
            let Some(fast) = wire::fast::walk(&&eth[..], &cfg, &mut NoFlows) else { continue };
            settled += 1;
            let full = wire::walk_full(&&eth[..], &cfg, &mut NoFlows);
            if fast != full {
                problems.push(format!(
                    "{} frame {}:\n    fast {fast:?}\n    full {full:?}",
                    path.display(),
                    frame.number
                ));
            }
        }
    }
    eprintln!("{} captures, {frames} frames: {settled} settled by the fast path", paths.len());
    assert!(settled > frames / 4, "the fast path settles the common shape");
    assert!(problems.is_empty(), "{} differences:\n{}", problems.len(), problems[..problems.len().min(20)].join("\n"));
}
