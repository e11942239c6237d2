//! One frame through `to_ethernet` for every link type, then the userspace
//! classifier (twice: the second time a large segment is a retransmission). Every
//! event must be self-consistent, survive the ring-buffer record format, and render
//! as printable ASCII.
#![no_main]

use agent_common::{Direction, KernelConfig, event::snap_cap};
use libfuzzer_sys::fuzz_target;
use pathwatch::{
    classify::{
        Classifier,
        link::{LinkType, to_ethernet},
    },
    event::Event,
    render::event_line,
};
use pathwatch_fuzz::{assert_printable, seeds};

const LINKS: [LinkType; 5] =
    [LinkType::Ethernet, LinkType::LinuxSll, LinkType::LinuxSll2, LinkType::RawIp, LinkType::Loopback];

fuzz_target!(init: seeds::init("classify"), |data: &[u8]| {
    for link in LINKS {
        let Some(eth) = to_ethernet(link, data) else { continue };
        if link == LinkType::Ethernet {
            assert_eq!(&eth[..], data);
        } else {
            assert!(eth.len() >= 14);
        }
        let mut classifier = Classifier::new(KernelConfig::new(), 64);
        for _ in 0..2 {
            let c = classifier.classify(&eth, Direction::Ingress, 3, 42);
            let Some(ev) = c.event else { continue };
            let h = &ev.header;
            assert_eq!(h.snap_len as usize, ev.snap.len());
            assert!(ev.snap.len() <= snap_cap(h.kind));
            let off = h.snap_offset as usize;
            assert_eq!(&eth[off..off + ev.snap.len()], &ev.snap[..], "the snap is the frame's bytes");
            assert_eq!(ev.class(), c.class);
            assert_eq!(Event::from_record(&seeds::record(&ev)), Ok(ev.clone()));
            assert_printable("event line", &event_line(&ev));
        }
    }
});
