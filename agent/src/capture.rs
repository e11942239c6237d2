//! Reading pcap and pcapng files (with the `pcap-file` crate's parsers), frame by
//! frame, with the byte offset of every frame so that damage is reported exactly.
//!
//! The file is memory-mapped and parsed in place. Timestamps are computed here:
//! pcap-file 2 treats every pcapng timestamp as nanoseconds whatever the
//! interface's `if_tsresol` says, and refuses pcap records longer than the header's
//! snaplen (several public captures have snaplen 0), so the raw records are used.

use std::{
    fs::File,
    path::{Path, PathBuf},
};

use memmap2::Mmap;
use pcap_file::{
    PcapError, TsResolution,
    pcap::{PcapParser, RawPcapPacket},
    pcapng::{
        Block, PcapNgParser,
        blocks::interface_description::{InterfaceDescriptionBlock, InterfaceDescriptionOption},
    },
};

use crate::classify::link::LinkType;

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
    /// The file could not be opened or mapped.
    #[error("{}: {source}", crate::printable::path(.path))]
    Open {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Not a pcap or pcapng file.
    #[error("{}: not a pcap or pcapng file (first bytes {magic})", crate::printable::path(.path))]
    BadMagic {
        /// The file.
        path: PathBuf,
        /// The first four bytes, hex.
        magic: String,
    },
    /// A frame uses a link type replay does not decode.
    #[error("{}: frame {frame} at byte offset {offset}: link type {linktype} is not supported (Ethernet, Linux cooked SLL/SLL2, raw IP and loopback are)", crate::printable::path(.path))]
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

/// A memory-mapped capture file.
pub struct Capture {
    path: PathBuf,
    map: Option<Mmap>,
}

impl Capture {
    /// Opens and maps `path`.
    pub fn open(path: &Path) -> Result<Capture, CaptureError> {
        let open_err = |source| CaptureError::Open { path: path.to_path_buf(), source };
        let file = File::open(path).map_err(open_err)?;
        let len = file.metadata().map_err(open_err)?.len();
        // An empty file cannot be mapped; it is simply not a capture.
        // SAFETY: `Mmap::map` is unsafe because the bytes behind the slice it gives
        // would change if another process wrote or truncated the file while it is
        // mapped (truncation raises SIGBUS). Nothing in pathwatch writes a capture:
        // the map is read-only and lives in this `Capture` only. What is left is the
        // condition every reader of a mapped file sets, and the operator meets: the
        // capture is not rewritten while it is replayed.
        let map = if len == 0 { None } else { Some(unsafe { Mmap::map(&file) }.map_err(open_err)?) };
        Ok(Capture { path: path.to_path_buf(), map })
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The file's bytes.
    pub fn bytes(&self) -> &[u8] {
        self.map.as_deref().unwrap_or(&[])
    }

    /// An iterator over the frames; it ends after the first error.
    pub fn frames(&self) -> Result<Frames<'_>, CaptureError> {
        let bytes = self.bytes();
        let magic = bytes.get(..4).unwrap_or(bytes);
        let kind = match magic {
            [0xd4, 0xc3, 0xb2, 0xa1]
            | [0xa1, 0xb2, 0xc3, 0xd4]
            | [0x4d, 0x3c, 0xb2, 0xa1]
            | [0xa1, 0xb2, 0x3c, 0x4d] => {
                let (rest, parser) = PcapParser::new(bytes).map_err(|e| self.corrupt(1, 0, &e))?;
                Kind::Pcap { parser, rest }
            }
            [0x0a, 0x0d, 0x0d, 0x0a] => {
                let (rest, parser) = PcapNgParser::new(bytes).map_err(|e| self.corrupt(1, 0, &e))?;
                let mut frames_kind = Kind::PcapNg { parser: Box::new(parser), rest, interfaces: Vec::new() };
                if let Kind::PcapNg { parser, interfaces, .. } = &mut frames_kind {
                    *interfaces = parser.interfaces().iter().map(Interface::from_idb).collect();
                }
                frames_kind
            }
            _ => {
                let magic = magic.iter().map(|b| format!("{b:02x}")).collect::<String>();
                return Err(CaptureError::BadMagic { path: self.path.clone(), magic });
            }
        };
        Ok(Frames { capture: self, kind, number: 0, done: false })
    }

    fn corrupt(&self, frame: u64, offset: u64, e: &PcapError) -> CaptureError {
        let reason = match e {
            PcapError::IncompleteBuffer => {
                "the record runs past the end of the file (file cut short, or a length field that lies)".to_string()
            }
            other => format!("malformed record: {other}"),
        };
        CaptureError::Corrupt { path: self.path.clone(), frame, offset, reason }
    }
}

/// How an interface's frames are decoded.
#[derive(Clone, Copy, Debug)]
struct Interface {
    linktype: u32,
    /// Nanoseconds per timestamp unit (0 when finer than a nanosecond: see `ts_ns`).
    units_per_sec: u64,
}

impl Interface {
    fn from_idb(idb: &InterfaceDescriptionBlock<'_>) -> Interface {
        let mut units_per_sec = 1_000_000;
        for opt in &idb.options {
            if let InterfaceDescriptionOption::IfTsResol(r) = opt {
                units_per_sec = if r & 0x80 != 0 {
                    1u64.checked_shl((r & 0x7f) as u32).unwrap_or(0)
                } else {
                    10u64.checked_pow((r & 0x7f) as u32).unwrap_or(0)
                };
            }
        }
        Interface { linktype: u32::from(idb.linktype), units_per_sec: units_per_sec.max(1) }
    }

    fn ts_ns(&self, units: u64) -> u64 {
        let secs = units / self.units_per_sec;
        let frac = units % self.units_per_sec;
        secs.saturating_mul(1_000_000_000)
            .saturating_add((frac as u128 * 1_000_000_000 / self.units_per_sec as u128) as u64)
    }
}

enum Kind<'a> {
    Pcap { parser: PcapParser, rest: &'a [u8] },
    PcapNg { parser: Box<PcapNgParser>, rest: &'a [u8], interfaces: Vec<Interface> },
}

/// Frames of one capture, in file order.
pub struct Frames<'a> {
    capture: &'a Capture,
    kind: Kind<'a>,
    number: u64,
    done: bool,
}

impl<'a> Frames<'a> {
    fn link(&self, linktype: u32, offset: u64) -> Result<LinkType, CaptureError> {
        LinkType::from_pcap(linktype).ok_or_else(|| CaptureError::UnknownLinkType {
            path: self.capture.path.clone(),
            frame: self.number,
            offset,
            linktype,
        })
    }

    fn next_pcap(&mut self) -> Option<Result<Frame<'a>, CaptureError>> {
        let Kind::Pcap { parser, rest } = &mut self.kind else { unreachable!() };
        if rest.is_empty() {
            return None;
        }
        let header = parser.header();
        let here = *rest;
        let offset = (self.capture.bytes().len() - here.len()) as u64;
        self.number += 1;
        let raw: RawPcapPacket<'a> = match parser.next_raw_packet(here) {
            Ok((rem, raw)) => {
                *rest = rem;
                raw
            }
            Err(e) => return Some(Err(self.capture.corrupt(self.number, offset, &e))),
        };
        let frac_ns = match header.ts_resolution {
            TsResolution::MicroSecond => raw.ts_frac as u64 * 1000,
            TsResolution::NanoSecond => raw.ts_frac as u64,
        };
        let link = match self.link(u32::from(header.datalink), offset) {
            Ok(l) => l,
            Err(e) => return Some(Err(e)),
        };
        let data: &'a [u8] = match raw.data {
            std::borrow::Cow::Borrowed(d) => d,
            std::borrow::Cow::Owned(_) => unreachable!("the parser borrows from the map"),
        };
        Some(Ok(Frame {
            ts_ns: raw.ts_sec as u64 * 1_000_000_000 + frac_ns,
            link,
            data,
            orig_len: raw.orig_len,
            number: self.number,
            offset,
        }))
    }

    fn next_pcapng(&mut self) -> Option<Result<Frame<'a>, CaptureError>> {
        loop {
            let Kind::PcapNg { parser, rest, interfaces } = &mut self.kind else { unreachable!() };
            if rest.is_empty() {
                return None;
            }
            let here = *rest;
            let offset = (self.capture.bytes().len() - here.len()) as u64;
            let block = match parser.next_block(here) {
                Ok((rem, block)) => {
                    *rest = rem;
                    block
                }
                Err(e) => {
                    self.number += 1;
                    return Some(Err(self.capture.corrupt(self.number, offset, &e)));
                }
            };
            let (iface, units, data, orig_len) = match block {
                Block::SectionHeader(_) => {
                    interfaces.clear();
                    continue;
                }
                Block::InterfaceDescription(idb) => {
                    interfaces.push(Interface::from_idb(&idb));
                    continue;
                }
                Block::EnhancedPacket(epb) => {
                    (epb.interface_id as usize, epb.timestamp.as_nanos() as u64, epb.data, epb.original_len)
                }
                Block::SimplePacket(spb) => (0, 0, spb.data, spb.original_len),
                Block::Packet(pb) => (pb.interface_id as usize, pb.timestamp, pb.data, pb.original_len),
                _ => continue,
            };
            self.number += 1;
            let Some(interface) = interfaces.get(iface).copied() else {
                return Some(Err(CaptureError::Corrupt {
                    path: self.capture.path.clone(),
                    frame: self.number,
                    offset,
                    reason: format!("packet names interface {iface}, which the file never described"),
                }));
            };
            let link = match self.link(interface.linktype, offset) {
                Ok(l) => l,
                Err(e) => return Some(Err(e)),
            };
            let data: &'a [u8] = match data {
                std::borrow::Cow::Borrowed(d) => d,
                std::borrow::Cow::Owned(_) => unreachable!("the parser borrows from the map"),
            };
            return Some(Ok(Frame {
                ts_ns: interface.ts_ns(units),
                link,
                data,
                orig_len,
                number: self.number,
                offset,
            }));
        }
    }
}

impl<'a> Iterator for Frames<'a> {
    type Item = Result<Frame<'a>, CaptureError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let item = match self.kind {
            Kind::Pcap { .. } => self.next_pcap(),
            Kind::PcapNg { .. } => self.next_pcapng(),
        };
        if !matches!(item, Some(Ok(_))) {
            self.done = true;
        }
        item
    }
}
