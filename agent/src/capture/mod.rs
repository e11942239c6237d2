//! Reading pcap and pcapng captures frame by frame, with the byte offset of every
//! frame so that damage is reported exactly.
//!
//! A capture is a file or standard input, plain or compressed ([`input`]); it is
//! read front to back through one buffer ([`reader`]), one record at a time
//! ([`records`]), so memory does not grow with its size.

pub mod input;
pub mod reader;
pub mod records;

use std::path::{Path, PathBuf};

use crate::classify::link::LinkType;

pub use reader::Reader;

/// One captured frame.
#[derive(Clone, Debug)]
pub struct Frame<'a> {
    /// Capture time, ns since the Unix epoch.
    pub ts_ns: u64,
    /// Link type of the frame.
    pub link: LinkType,
    /// Captured bytes.
    pub data: &'a [u8],
    /// Length on the wire.
    pub orig_len: u32,
    /// 1-based frame number in its file.
    pub number: u64,
    /// Byte offset of the frame's record in the file.
    pub offset: u64,
}

/// Why a capture could not be read (further).
#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    /// The file could not be opened.
    #[error("{}: {source}", crate::printable::path(.path))]
    Open {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Not a pcap or pcapng file.
    #[error("{}: not a pcap or pcapng file ({}first bytes {magic})", crate::printable::path(.path), if .compression.is_empty() { String::new() } else { format!("{} compressed; ", .compression) })]
    BadMagic {
        /// The file.
        path: PathBuf,
        /// The first four bytes (after decompression), hex.
        magic: String,
        /// The compression undone first ("gzip"), empty for none.
        compression: &'static str,
    },
    /// A frame uses a link type replay does not decode.
    #[error("{}: frame {frame} at byte offset {offset}: link type {linktype} is not supported (Ethernet, Linux cooked SLL/SLL2, raw IP, loopback, PPP and NFLOG are)", crate::printable::path(.path))]
    UnknownLinkType {
        /// The file.
        path: PathBuf,
        /// Frame number.
        frame: u64,
        /// Byte offset of the record.
        offset: u64,
        /// The link type number.
        linktype: u32,
    },
    /// A record is cut short or malformed.
    #[error("{}: frame {frame} at byte offset {offset}: {reason}", crate::printable::path(.path))]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// Frame number (the one that could not be read).
        frame: u64,
        /// Byte offset of the damaged record.
        offset: u64,
        /// What is wrong.
        reason: String,
    },
}

/// A frame read from a capture, owning its bytes (see [`Capture::frames`]).
#[derive(Clone, Debug)]
pub struct OwnedFrame {
    /// Capture time, ns since the Unix epoch.
    pub ts_ns: u64,
    /// Link type of the frame.
    pub link: LinkType,
    /// Captured bytes.
    pub data: Vec<u8>,
    /// Length on the wire.
    pub orig_len: u32,
    /// 1-based frame number in its file.
    pub number: u64,
    /// Byte offset of the frame's record in the (decompressed) capture.
    pub offset: u64,
}

impl From<Frame<'_>> for OwnedFrame {
    fn from(f: Frame<'_>) -> OwnedFrame {
        OwnedFrame {
            ts_ns: f.ts_ns,
            link: f.link,
            data: f.data.to_vec(),
            orig_len: f.orig_len,
            number: f.number,
            offset: f.offset,
        }
    }
}

/// A capture file to read as often as needed (tests, benchmarks and fuzzing read one
/// file several times; replay uses a [`Reader`] per file).
pub struct Capture {
    path: PathBuf,
}

impl Capture {
    /// A capture at `path`, checked to open.
    pub fn open(path: &Path) -> Result<Capture, CaptureError> {
        if !input::is_stdin(path) {
            std::fs::File::open(path).map_err(|source| CaptureError::Open { path: path.to_path_buf(), source })?;
        }
        Ok(Capture { path: path.to_path_buf() })
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Its frames from the start, each owning its bytes; the iterator ends after the
    /// first error.
    pub fn frames(&self) -> Result<Frames, CaptureError> {
        Ok(Frames { reader: Reader::open(&self.path)? })
    }
}

/// The frames of a [`Capture`], in file order.
pub struct Frames {
    reader: Reader,
}

impl Frames {
    /// Interfaces whose frames were skipped so far.
    pub fn skipped(&self) -> &[records::SkippedInterface] {
        self.reader.skipped()
    }
}

impl Iterator for Frames {
    type Item = Result<OwnedFrame, CaptureError>;

    fn next(&mut self) -> Option<Self::Item> {
        self.reader.next_frame().map(|r| r.map(OwnedFrame::from))
    }
}
