//! `Event::from_record` on arbitrary bytes (a ring-buffer record the agent did not
//! write): a decoded event keeps exactly its snap bytes, renders as printable ASCII,
//! and goes through the detectors without a panic.
#![no_main]

use std::sync::LazyLock;

use agent_common::event::{HEADER_LEN, SNAP_LARGE};
use libfuzzer_sys::fuzz_target;
use pathwatch::{
    config::Config,
    detect::{Detectors, Emission},
    event::{Event, RecordError},
    render::event_line,
};
use pathwatch_fuzz::{assert_printable, json_line, seeds, small_config};

static CONFIG: LazyLock<Config> = LazyLock::new(small_config);

fuzz_target!(init: seeds::init("event"), |data: &[u8]| {
    match Event::from_record(data) {
        Ok(ev) => {
            assert!(ev.snap.len() <= SNAP_LARGE);
            assert_eq!(&ev.snap[..], &data[HEADER_LEN..HEADER_LEN + ev.snap.len()]);
            let _ = (ev.kind(), ev.class(), ev.direction(), ev.src_ip(), ev.dst_ip());
            assert_printable("event line", &event_line(&ev));
            let mut d = Detectors::new(&CONFIG, Emission::Live { interval_ns: 0 });
            d.on_event(&ev);
            d.on_event(&ev);
            d.finish(ev.header.ts_ns);
            for f in d.take_due() {
                assert_printable("finding", &json_line("finding", &f.to_json()));
            }
        }
        Err(RecordError::Short(n)) => assert!(n < HEADER_LEN),
        Err(e) => assert_printable("record error", &e.to_string()),
    }
});
