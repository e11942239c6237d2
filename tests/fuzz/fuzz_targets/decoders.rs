//! The decoders on arbitrary bytes: DNS header and question (names shown as printable
//! ASCII, and the same name whatever the case), ICMP errors and their quoted flow,
//! DNS names from arbitrary labels, and the DTLS record walk (through the classifier,
//! as a UDP payload whose length is honest, and one whose UDP length claims more).
#![no_main]

use agent_common::{Direction, KernelConfig};
use libfuzzer_sys::fuzz_target;
use pathwatch::{
    classify::Classifier,
    decode::{dns, icmp, name::DnsName},
};
use pathwatch_fuzz::{assert_printable, build, seeds};

fn check_name(name: &DnsName) {
    let shown = name.to_string();
    assert_printable("dns name", &shown);
    assert!(!shown.contains(' '), "a space inside a name is escaped: {shown:?}");
}

fuzz_target!(init: seeds::init("decoders"), |data: &[u8]| {
    if let Some(m) = dns::decode(data) {
        assert_eq!(m.id, u16::from_be_bytes([data[0], data[1]]));
        assert_printable("rcode", &dns::rcode_name(m.rcode));
        if let Some(q) = m.question {
            check_name(&q.name);
            assert_printable("qtype", &dns::qtype_name(q.qtype));
            let upper: Vec<Vec<u8>> = q.name.labels().map(|l| l.to_ascii_uppercase()).collect();
            assert_eq!(DnsName::from_labels(upper.iter().map(Vec::as_slice)), q.name);
        }
    } else {
        assert!(data.len() < 12, "a 12-byte header always decodes");
    }

    let (t, code) = (data.first().copied().unwrap_or(0), data.get(1).copied().unwrap_or(0));
    let e = icmp::decode(t, code, 1400, data);
    assert_eq!((e.icmp_type, e.code, e.mtu), (t, code, 1400));
    if let Some(q) = e.quoted {
        assert_eq!(q.src_port.is_some(), q.dst_port.is_some());
    }

    // Labels split at every zero byte, cut to 255 bytes each.
    let labels: Vec<&[u8]> = data.split(|b| *b == 0).collect();
    let name = DnsName::from_labels(labels.iter().copied());
    check_name(&name);
    assert_eq!(name.labels().count(), labels.len());
    check_name(&DnsName::from_dotted(&String::from_utf8_lossy(data)));

    let honest = build::ipv4(build::CLIENT, build::SERVER, 17, true, &build::udp(40000, 443, data));
    let mut lying = honest.clone();
    let claimed = (8 + data.len() + (t as usize)).min(0xffff) as u16;
    lying[38..40].copy_from_slice(&claimed.to_be_bytes());
    for frame in [honest, lying] {
        let c = Classifier::new(KernelConfig::new(), 4).classify(&frame, Direction::Ingress, 0, 0);
        if let Some(ev) = c.event {
            assert_eq!(ev.snap, data[..ev.snap.len()]);
        }
    }
});
