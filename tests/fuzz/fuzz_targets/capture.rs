//! Whole capture files through `Capture` and its frame iterator: never a panic; every
//! frame numbered in order, inside the file; every error names the frame and the byte
//! offset of the damage; the iterator ends after an error.
#![no_main]

use std::path::PathBuf;

use libfuzzer_sys::fuzz_target;
use pathwatch::{
    capture::{Capture, CaptureError},
    classify::link::to_ethernet,
};
use pathwatch_fuzz::{assert_no_controls, seeds};

fn scratch() -> PathBuf {
    // tmpfs when there is one: one write per input.
    let dir = if std::path::Path::new("/dev/shm").is_dir() { PathBuf::from("/dev/shm") } else { std::env::temp_dir() };
    dir.join(format!("pathwatch-fuzz-capture-{}.pcap", std::process::id()))
}

fn check_error(e: &CaptureError, len: u64, expected_frame: u64) {
    let text = e.to_string();
    assert_no_controls("capture error", &text);
    match e {
        CaptureError::Open { .. } => panic!("an existing file failed to open: {text}"),
        CaptureError::BadMagic { .. } => panic!("bad magic reported by the iterator: {text}"),
        CaptureError::UnknownLinkType { frame, offset, .. } | CaptureError::Corrupt { frame, offset, .. } => {
            assert_eq!(*frame, expected_frame, "{text}");
            assert!(*offset <= len, "offset past the end of a {len}-byte file: {text}");
            assert!(text.contains(&format!("frame {frame} at byte offset {offset}")), "{text}");
        }
    }
}

fuzz_target!(init: seeds::init("capture"), |data: &[u8]| {
    let path = scratch();
    std::fs::write(&path, data).expect("write scratch capture");
    let capture = Capture::open(&path).expect("open scratch capture");
    // The map keeps the bytes; no file is left behind when the process ends.
    let _ = std::fs::remove_file(&path);
    let len = data.len() as u64;
    let frames = match capture.frames() {
        Ok(f) => f,
        Err(CaptureError::BadMagic { .. }) => {
            let magic = data.get(..4).unwrap_or(data);
            assert!(!matches!(magic, [0xd4, 0xc3, 0xb2, 0xa1] | [0xa1, 0xb2, 0xc3, 0xd4] | [0x4d, 0x3c, 0xb2, 0xa1] | [0xa1, 0xb2, 0x3c, 0x4d] | [0x0a, 0x0d, 0x0d, 0x0a]));
            return;
        }
        Err(e) => return check_error(&e, len, 1),
    };
    let base = capture.bytes().as_ptr() as usize;
    let (mut number, mut last_offset) = (0u64, None::<u64>);
    let mut frames = frames;
    for item in frames.by_ref() {
        match item {
            Ok(f) => {
                number += 1;
                assert_eq!(f.number, number);
                assert!(last_offset.is_none_or(|o| f.offset > o), "offsets go forward");
                last_offset = Some(f.offset);
                let start = f.data.as_ptr() as usize;
                assert!(f.data.is_empty() || (start >= base && start + f.data.len() <= base + data.len()), "frame data inside the file");
                let _ = to_ethernet(f.link, f.data);
            }
            Err(e) => {
                check_error(&e, len, number + 1);
                break;
            }
        }
    }
    assert!(frames.next().is_none(), "the iterator ends after an error");
});
