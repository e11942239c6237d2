//! Whole captures through the streaming `Reader`: never a panic; every frame numbered
//! in increasing order, at increasing offsets, inside the capture; every error names
//! the frame and the byte offset of the damage; the reader ends after an error.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use pathwatch::{
    capture::{CaptureError, Reader, input::Compression},
    classify::link::to_ethernet,
};
use pathwatch_fuzz::{assert_no_controls, seeds};

/// Checks an error of a capture of `len` bytes (`None`: compressed, so offsets are
/// in bytes the fuzzer never saw) found after frame `last`.
fn check_error(e: &CaptureError, len: Option<u64>, last: u64) {
    let text = e.to_string();
    assert_no_controls("capture error", &text);
    match e {
        CaptureError::Open { .. } => panic!("bytes in memory failed to open: {text}"),
        CaptureError::BadMagic { .. } => assert_eq!(last, 0, "bad magic after frames: {text}"),
        CaptureError::UnknownLinkType { frame, offset, .. } | CaptureError::Corrupt { frame, offset, .. } => {
            assert!(*frame > last, "the damage is after the last frame read ({last}): {text}");
            if let Some(len) = len {
                assert!(*offset <= len, "offset past the end of a {len}-byte file: {text}");
            }
            assert!(text.contains(&format!("frame {frame} at byte offset {offset}")), "{text}");
        }
    }
}

fuzz_target!(init: seeds::init("capture"), |data: &[u8]| {
    let len = (Compression::sniff(data) == Compression::None).then_some(data.len() as u64);
    let mut reader = match Reader::from_bytes(Path::new("fuzz.pcap"), data.to_vec()) {
        Ok(r) => r,
        Err(e) => return check_error(&e, len, 0),
    };
    let (mut last, mut last_offset) = (0u64, None::<u64>);
    loop {
        match reader.next_frame() {
            Some(Ok(f)) => {
                assert!(f.number > last, "frame numbers increase");
                last = f.number;
                assert!(last_offset.is_none_or(|o| f.offset > o), "offsets go forward");
                last_offset = Some(f.offset);
                if let Some(len) = len {
                    assert!(f.offset + f.data.len() as u64 <= len, "frame data inside the file");
                }
                let _ = to_ethernet(f.link, f.data);
            }
            Some(Err(e)) => {
                check_error(&e, len, last);
                break;
            }
            None => break,
        }
    }
    assert!(reader.next_frame().is_none(), "the reader ends after an error");
});
