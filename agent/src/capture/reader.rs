//! A capture read front to back through one buffer, so that replay's memory does not
//! grow with the file: a pipe, a compressed file and a 1 GB capture cost the same.
//!
//! The reader lends one frame at a time ([`Reader::frame`]); its bytes stay in the
//! buffer until [`Reader::advance`] moves on. The buffer holds at least one whole
//! record and grows only for a record larger than it (up to
//! [`records::MAX_RECORD`]).

use std::{
    io::{self, Read},
    path::{Path, PathBuf},
};

use super::{
    CaptureError, Frame,
    input::{self, Compression},
    records::{self, Format, FrameAt, RecordError, Records, SkippedInterface, Step},
};

/// Bytes asked of the input at a time (and the buffer's first size).
const CHUNK: usize = 256 << 10;

/// One capture, read sequentially.
pub struct Reader {
    buffer: Buffer,
    records: Records,
    /// The frame lent out, its bytes still at the front of the buffer.
    current: Option<FrameAt>,
    done: bool,
}

impl Reader {
    /// Opens `path` (`-` for standard input), compressed or not, and reads its header.
    pub fn open(path: &Path) -> Result<Reader, CaptureError> {
        let (input, compression) =
            input::open(path).map_err(|source| CaptureError::Open { path: path.to_path_buf(), source })?;
        Reader::new(path, input, compression)
    }

    /// A reader of `bytes` already in memory, named `path` in messages.
    pub fn from_bytes(path: &Path, bytes: Vec<u8>) -> Result<Reader, CaptureError> {
        Reader::from_read(path, Box::new(io::Cursor::new(bytes)))
    }

    /// A reader of the capture `input` delivers, compressed or not, named `path`.
    pub fn from_read(path: &Path, input: Box<dyn Read + Send>) -> Result<Reader, CaptureError> {
        let (input, compression) =
            input::decompress(input).map_err(|source| CaptureError::Open { path: path.to_path_buf(), source })?;
        Reader::new(path, input, compression)
    }

    fn new(path: &Path, input: Box<dyn Read + Send>, compression: Compression) -> Result<Reader, CaptureError> {
        let mut buffer = Buffer {
            path: path.to_path_buf(),
            input,
            compression,
            buf: vec![0; CHUNK],
            start: 0,
            end: 0,
            base: 0,
            eof: false,
        };
        let records = loop {
            let head = buffer.unread();
            if head.len() >= 4 || buffer.eof {
                let Some(format) = Format::sniff(head) else {
                    let magic = head.iter().take(4).map(|b| format!("{b:02x}")).collect::<String>();
                    return Err(CaptureError::BadMagic { path: buffer.path, magic, compression: compression.name() });
                };
                match Records::start(format, head) {
                    Ok(Some((records, len))) => {
                        buffer.consume(len);
                        break records;
                    }
                    Ok(None) if buffer.eof => {
                        return Err(buffer.corrupt(1, "the file header runs past the end of the file".into()));
                    }
                    Ok(None) => {}
                    Err(RecordError::Corrupt(reason)) => return Err(buffer.corrupt(1, reason)),
                    Err(RecordError::UnknownLinkType(_)) => unreachable!("a header has no frames"),
                }
            }
            buffer.fill(1)?;
        };
        Ok(Reader { buffer, records, current: None, done: false })
    }

    /// The capture's path as given (`-` for standard input).
    pub fn path(&self) -> &Path {
        &self.buffer.path
    }

    /// How the capture was compressed.
    pub fn compression(&self) -> Compression {
        self.buffer.compression
    }

    /// Interfaces whose frames were skipped (a link type replay cannot read), so far.
    pub fn skipped(&self) -> &[SkippedInterface] {
        self.records.skipped()
    }

    /// Moves to the next frame: `Ok(false)` at the end of the capture. After an error
    /// the reader stays at its end; the frames before it were all delivered.
    pub fn advance(&mut self) -> Result<bool, CaptureError> {
        if let Some(f) = self.current.take() {
            self.buffer.consume(f.consumed);
        }
        if self.done {
            return Ok(false);
        }
        let result = self.step();
        if !matches!(result, Ok(true)) {
            self.done = true;
        }
        result
    }

    /// The frame [`Reader::advance`] moved to.
    pub fn frame(&self) -> Option<Frame<'_>> {
        let f = self.current.as_ref()?;
        let unread = self.buffer.unread();
        Some(Frame {
            ts_ns: f.ts_ns,
            link: f.link,
            data: &unread[f.data.clone()],
            orig_len: f.orig_len,
            number: f.number,
            offset: self.buffer.base,
        })
    }

    /// The next frame, lent until the next call: `advance` and `frame` in one.
    pub fn next_frame(&mut self) -> Option<Result<Frame<'_>, CaptureError>> {
        match self.advance() {
            Ok(true) => self.frame().map(Ok),
            Ok(false) => None,
            Err(e) => Some(Err(e)),
        }
    }

    fn step(&mut self) -> Result<bool, CaptureError> {
        loop {
            match self.records.next(self.buffer.unread()) {
                Ok(Step::Frame(f)) => {
                    self.current = Some(f);
                    return Ok(true);
                }
                Ok(Step::Skip { consumed }) => self.buffer.consume(consumed),
                Ok(Step::NeedMore) if self.buffer.eof => {
                    if self.buffer.unread().is_empty() {
                        return Ok(false);
                    }
                    let reason =
                        "the record runs past the end of the file (file cut short, or a length field that lies)";
                    return Err(self.buffer.corrupt(self.records.number() + 1, reason.to_string()));
                }
                Ok(Step::NeedMore) => self.buffer.fill(self.records.number() + 1)?,
                Err(RecordError::Corrupt(reason)) => return Err(self.buffer.corrupt(self.records.number(), reason)),
                Err(RecordError::UnknownLinkType(linktype)) => {
                    return Err(CaptureError::UnknownLinkType {
                        path: self.buffer.path.clone(),
                        frame: self.records.number(),
                        offset: self.buffer.base,
                        linktype,
                    });
                }
            }
        }
    }
}

/// The input and the window of it read so far.
struct Buffer {
    path: PathBuf,
    input: Box<dyn Read + Send>,
    compression: Compression,
    buf: Vec<u8>,
    /// The unread bytes are `buf[start..end]`.
    start: usize,
    end: usize,
    /// Offset in the (decompressed) capture of `buf[start]`.
    base: u64,
    eof: bool,
}

impl Buffer {
    fn unread(&self) -> &[u8] {
        &self.buf[self.start..self.end]
    }

    fn consume(&mut self, n: usize) {
        self.start += n;
        self.base += n as u64;
    }

    /// Reads more of the input behind the unread bytes, moving them to the front and
    /// growing the buffer when they fill it. `frame` names the record being read, for
    /// an error.
    fn fill(&mut self, frame: u64) -> Result<(), CaptureError> {
        if self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        if self.end == self.buf.len() {
            // `Records` refuses a record claiming more than MAX_RECORD, so a buffer of
            // that size plus a chunk always holds a whole one.
            let grown = (self.buf.len() * 2).min(records::MAX_RECORD + CHUNK);
            self.buf.resize(grown.max(self.end + 1), 0);
        }
        loop {
            match self.input.read(&mut self.buf[self.end..]) {
                Ok(0) => {
                    self.eof = true;
                    return Ok(());
                }
                Ok(n) => {
                    self.end += n;
                    return Ok(());
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    let reason = match self.compression {
                        Compression::None => format!("reading failed: {e}"),
                        c => format!(
                            "the {} stream is cut short or damaged after {} bytes of capture: {e}",
                            c.name(),
                            self.base + (self.end - self.start) as u64
                        ),
                    };
                    return Err(self.corrupt(frame, reason));
                }
            }
        }
    }

    fn corrupt(&self, frame: u64, reason: String) -> CaptureError {
        CaptureError::Corrupt { path: self.path.clone(), frame, offset: self.base, reason }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::classify::link::LinkType;
    use pcap_file::{
        DataLink,
        pcapng::{
            PcapNgWriter,
            blocks::{enhanced_packet::EnhancedPacketBlock, interface_description::InterfaceDescriptionBlock},
        },
    };
    use std::{borrow::Cow, time::Duration};

    /// Delivers at most 7 bytes a read, so that every record straddles refills.
    struct Trickle(io::Cursor<Vec<u8>>);
    impl Read for Trickle {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let n = buf.len().min(7);
            self.0.read(&mut buf[..n])
        }
    }

    fn pcapng(interfaces: &[DataLink], packets: &[(u32, &[u8])]) -> Vec<u8> {
        let mut w = PcapNgWriter::new(Vec::new()).unwrap();
        for &linktype in interfaces {
            w.write_pcapng_block(InterfaceDescriptionBlock { linktype, snaplen: 0, options: vec![] }).unwrap();
        }
        for (i, (iface, data)) in packets.iter().enumerate() {
            let epb = EnhancedPacketBlock {
                interface_id: *iface,
                timestamp: Duration::from_micros(1_000_000 + i as u64),
                original_len: data.len() as u32,
                data: Cow::Borrowed(data),
                options: vec![],
            };
            w.write_pcapng_block(epb).unwrap();
        }
        w.into_inner()
    }

    /// Frame numbers and bytes, read until the end or the first error.
    type ReadAll = (Vec<(u64, Vec<u8>)>, Option<CaptureError>, Reader);

    fn read_all(mut r: Reader) -> ReadAll {
        let mut frames = Vec::new();
        let err = loop {
            match r.next_frame() {
                Some(Ok(f)) => frames.push((f.number, f.data.to_vec())),
                Some(Err(e)) => break Some(e),
                None => break None,
            }
        };
        (frames, err, r)
    }

    #[test]
    fn records_straddling_every_refill_are_read_whole_and_numbered() {
        let bytes = pcapng(&[DataLink::ETHERNET], &[(0, b"first frame"), (0, b"second"), (0, &[7; 300])]);
        let r = Reader::from_read(Path::new("t.pcapng"), Box::new(Trickle(io::Cursor::new(bytes)))).unwrap();
        let (frames, err, _) = read_all(r);
        assert!(err.is_none(), "{err:?}");
        assert_eq!(frames, vec![(1, b"first frame".to_vec()), (2, b"second".to_vec()), (3, vec![7; 300])]);
    }

    #[test]
    fn an_interface_of_an_unknown_link_type_is_skipped_and_counted_not_fatal() {
        let bytes = pcapng(
            &[DataLink::ETHERNET, DataLink::Unknown(147)],
            &[(0, b"a"), (1, b"user-defined"), (0, b"b"), (1, b"again")],
        );
        let (frames, err, r) = read_all(Reader::from_bytes(Path::new("t.pcapng"), bytes).unwrap());
        assert!(err.is_none(), "{err:?}");
        assert_eq!(frames, vec![(1, b"a".to_vec()), (3, b"b".to_vec())], "numbers count the skipped frames too");
        assert_eq!(r.skipped(), &[SkippedInterface { interface: 1, linktype: 147, frames: 2 }]);
    }

    #[test]
    fn a_record_claiming_more_than_any_capture_holds_is_refused_at_once() {
        let mut bytes = pcapng(&[DataLink::ETHERNET], &[(0, b"kept")]);
        let at = bytes.len() as u64;
        // An enhanced packet block whose total length says 2 GiB.
        bytes.extend_from_slice(&[6, 0, 0, 0, 0, 0, 0, 0x80, 0, 0, 0, 0]);
        bytes.extend_from_slice(&[0; 64]);
        let (frames, err, _) = read_all(Reader::from_bytes(Path::new("t.pcapng"), bytes).unwrap());
        assert_eq!(frames.len(), 1);
        match err {
            Some(CaptureError::Corrupt { frame: 2, offset, reason, .. }) => {
                assert_eq!(offset, at);
                assert!(reason.contains("length field that lies"), "{reason}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn interfaces_of_different_link_types_keep_their_own_timestamp_resolution() {
        use pcap_file::pcapng::blocks::interface_description::InterfaceDescriptionOption;
        let mut w = PcapNgWriter::new(Vec::new()).unwrap();
        let ns = InterfaceDescriptionBlock {
            linktype: DataLink::ETHERNET,
            snaplen: 0,
            options: vec![InterfaceDescriptionOption::IfTsResol(9)],
        };
        w.write_pcapng_block(ns).unwrap();
        w.write_pcapng_block(InterfaceDescriptionBlock { linktype: DataLink::RAW, snaplen: 0, options: vec![] })
            .unwrap();
        // pcap-file writes a timestamp's units as given: nanoseconds for interface 0,
        // microseconds (the default) for interface 1.
        for (iface, units) in [(0u32, 1_700_000_000_123_456_789u64), (1, 1_700_000_001_000_002)] {
            let epb = EnhancedPacketBlock {
                interface_id: iface,
                timestamp: Duration::from_nanos(units),
                original_len: 4,
                data: Cow::Borrowed(&[0x45, 0, 0, 4]),
                options: vec![],
            };
            w.write_pcapng_block(epb).unwrap();
        }
        let mut r = Reader::from_bytes(Path::new("t.pcapng"), w.into_inner()).unwrap();
        let first = r.next_frame().unwrap().unwrap();
        assert_eq!((first.ts_ns, first.link), (1_700_000_000_123_456_789, LinkType::Ethernet));
        let second = r.next_frame().unwrap().unwrap();
        assert_eq!((second.ts_ns, second.link), (1_700_000_001_000_002_000, LinkType::RawIp));
    }

    #[test]
    fn a_packet_comment_that_is_not_utf8_does_not_stop_the_capture() {
        let mut bytes = pcapng(&[DataLink::ETHERNET], &[(0, b"before")]);
        // An enhanced packet block with an opt_comment of invalid UTF-8, as
        // PcapPlusPlus's example capture has (pcap-file refuses it, tshark reads it).
        let data = b"frame!\0\0";
        let comment = b"Packet #1\0xM9\x87\x0c\0";
        let len = 28 + data.len() + 4 + comment.len() + 4 + 4;
        let mut epb = Vec::new();
        for v in [6u32, len as u32, 0, 0, 5, 6, 6] {
            epb.extend_from_slice(&v.to_le_bytes());
        }
        epb.extend_from_slice(data);
        epb.extend_from_slice(&[1, 0, 15, 0]);
        epb.extend_from_slice(comment);
        epb.extend_from_slice(&[0, 0, 0, 0]);
        epb.extend_from_slice(&(len as u32).to_le_bytes());
        assert_eq!(epb.len(), len);
        bytes.extend_from_slice(&epb);
        bytes.extend_from_slice(&pcapng(&[DataLink::ETHERNET], &[(0, b"after")])[28..]);
        let (frames, err, _) = read_all(Reader::from_bytes(Path::new("t.pcapng"), bytes).unwrap());
        assert!(err.is_none(), "{err:?}");
        let data: Vec<&[u8]> = frames.iter().map(|(_, d)| &d[..]).collect();
        assert_eq!(data, [&b"before"[..], b"frame!", b"after"]);
    }
}
