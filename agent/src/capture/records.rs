//! The record layer of pcap and pcapng, on whatever bytes are at hand.
//!
//! Reading a file through a fixed-size buffer means a record may be only partly
//! there: every step here either takes one whole record from the front of the bytes
//! it is given, or says how many more it needs. The streaming reader
//! ([`super::reader`]) refills and asks again; nothing here keeps a borrow between
//! steps. The `pcap-file` crate parses each record; timestamps are computed here,
//! because pcap-file 2 treats every pcapng timestamp as nanoseconds whatever the
//! interface's `if_tsresol` says, and refuses pcap records longer than the header's
//! snaplen (several public captures have snaplen 0).

use std::ops::Range;

use pcap_file::{
    Endianness, PcapError, TsResolution,
    pcap::{PcapHeader, PcapParser},
    pcapng::{
        Block, PcapNgParser,
        blocks::interface_description::{InterfaceDescriptionBlock, InterfaceDescriptionOption},
    },
};

use crate::classify::link::LinkType;

/// The longest record accepted. Wireshark's largest packet is 256 KiB; a length
/// field beyond this is a lie, and believing it would make the reader buffer the
/// rest of the file looking for the record's end.
pub const MAX_RECORD: usize = 16 << 20;

/// The container format, told by the first four bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// libpcap, either byte order, micro- or nanosecond timestamps.
    Pcap,
    /// pcapng.
    PcapNg,
}

impl Format {
    /// The format whose magic number starts `bytes`.
    pub fn sniff(bytes: &[u8]) -> Option<Format> {
        match bytes.get(..4)? {
            [0xd4, 0xc3, 0xb2, 0xa1]
            | [0xa1, 0xb2, 0xc3, 0xd4]
            | [0x4d, 0x3c, 0xb2, 0xa1]
            | [0xa1, 0xb2, 0x3c, 0x4d] => Some(Format::Pcap),
            [0x0a, 0x0d, 0x0d, 0x0a] => Some(Format::PcapNg),
            _ => None,
        }
    }
}

/// What one step over the bytes at hand found.
#[derive(Debug)]
pub enum Step {
    /// A frame; `consumed` bytes make up its record.
    Frame(FrameAt),
    /// A record that is no frame (a block pathwatch does not use, or a frame of an
    /// interface whose link type it cannot read): skip `consumed` bytes.
    Skip {
        /// Bytes of the record.
        consumed: usize,
    },
    /// The record at the front is not all there yet.
    NeedMore,
}

/// A frame, placed in the bytes it was read from.
#[derive(Clone, Debug)]
pub struct FrameAt {
    /// Capture time, ns since the Unix epoch.
    pub ts_ns: u64,
    /// Link type of the frame.
    pub link: LinkType,
    /// Where the captured bytes are, in the bytes given to [`Records::next`].
    pub data: Range<usize>,
    /// Length on the wire.
    pub orig_len: u32,
    /// 1-based frame number in its file.
    pub number: u64,
    /// Bytes of the record, from the front of the bytes given.
    pub consumed: usize,
}

/// Why a record cannot be read.
#[derive(Debug)]
pub enum RecordError {
    /// A pcap file of a link type replay does not read.
    UnknownLinkType(u32),
    /// A record is malformed or lies about its length.
    Corrupt(String),
}

/// Frames of one interface that were skipped because replay cannot read its link type.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SkippedInterface {
    /// Interface number in its section.
    pub interface: usize,
    /// Its link type.
    pub linktype: u32,
    /// Frames skipped.
    pub frames: u64,
}

/// How an interface's frames are decoded.
#[derive(Clone, Copy, Debug)]
struct Interface {
    linktype: u32,
    /// Timestamp units per second (from `if_tsresol`; microseconds by default).
    units_per_sec: u64,
}

/// Timestamp units per second for an `if_tsresol` value (a power of ten, or of two
/// with the top bit set).
fn units_per_sec(resol: u8) -> u64 {
    let units = if resol & 0x80 != 0 {
        1u64.checked_shl((resol & 0x7f) as u32).unwrap_or(0)
    } else {
        10u64.checked_pow((resol & 0x7f) as u32).unwrap_or(0)
    };
    units.max(1)
}

/// `if_tsresol`'s option code.
const IF_TSRESOL: u16 = 9;

impl Interface {
    fn from_idb(idb: &InterfaceDescriptionBlock<'_>) -> Interface {
        let mut units = 1_000_000;
        for opt in &idb.options {
            if let InterfaceDescriptionOption::IfTsResol(r) = opt {
                units = units_per_sec(*r);
            }
        }
        Interface { linktype: u32::from(idb.linktype), units_per_sec: units }
    }

    fn ts_ns(&self, units: u64) -> u64 {
        let secs = units / self.units_per_sec;
        let frac = units % self.units_per_sec;
        secs.saturating_mul(1_000_000_000)
            .saturating_add((frac as u128 * 1_000_000_000 / self.units_per_sec as u128) as u64)
    }
}

enum Parser {
    Pcap { parser: PcapParser, header: PcapHeader },
    PcapNg { parser: Box<PcapNgParser>, interfaces: Vec<Interface> },
}

/// The record walk of one capture.
pub struct Records {
    parser: Parser,
    /// Frames read or attempted (the number of the last one).
    number: u64,
    skipped: Vec<SkippedInterface>,
}

fn range_in(outer: &[u8], inner: &[u8]) -> Range<usize> {
    let start = inner.as_ptr() as usize - outer.as_ptr() as usize;
    start..start + inner.len()
}

fn borrowed<'a>(data: &std::borrow::Cow<'a, [u8]>) -> &'a [u8] {
    match data {
        std::borrow::Cow::Borrowed(d) => d,
        std::borrow::Cow::Owned(_) => unreachable!("pcap-file's parsers borrow from their input"),
    }
}

fn reason(e: &PcapError) -> String {
    format!("malformed record: {e}")
}

impl Records {
    /// Reads the file header (pcap) or the first section header (pcapng) of `format`
    /// from the front of `bytes`: the walk and the header's length, or `None` when
    /// more bytes are needed.
    pub fn start(format: Format, bytes: &[u8]) -> Result<Option<(Records, usize)>, RecordError> {
        let (parser, rest) = match format {
            Format::Pcap => match PcapParser::new(bytes) {
                Ok((rest, parser)) => {
                    let header = parser.header();
                    (Parser::Pcap { parser, header }, rest)
                }
                Err(PcapError::IncompleteBuffer) => return Ok(None),
                Err(e) => return Err(RecordError::Corrupt(reason(&e))),
            },
            Format::PcapNg => match PcapNgParser::new(bytes) {
                Ok((rest, parser)) => {
                    let interfaces = parser.interfaces().iter().map(Interface::from_idb).collect();
                    (Parser::PcapNg { parser: Box::new(parser), interfaces }, rest)
                }
                Err(PcapError::IncompleteBuffer) => return Ok(None),
                Err(e) => return Err(RecordError::Corrupt(reason(&e))),
            },
        };
        Ok(Some((Records { parser, number: 0, skipped: Vec::new() }, bytes.len() - rest.len())))
    }

    /// The number of the last frame read or attempted.
    pub fn number(&self) -> u64 {
        self.number
    }

    /// Interfaces whose frames were skipped, with how many.
    pub fn skipped(&self) -> &[SkippedInterface] {
        &self.skipped
    }

    /// The length the record at the front of `bytes` claims, when its header is there.
    fn claimed_len(&self, bytes: &[u8]) -> Option<usize> {
        let (at, endianness, fixed) = match &self.parser {
            Parser::Pcap { header, .. } => (8, header.endianness, 16),
            Parser::PcapNg { parser, .. } => {
                // A section header sets its own byte order; the parser checks it.
                if bytes.get(..4)? == [0x0a, 0x0d, 0x0d, 0x0a] {
                    return None;
                }
                (4, parser.section().endianness, 0)
            }
        };
        let field: [u8; 4] = bytes.get(at..at + 4)?.try_into().ok()?;
        let n = match endianness {
            Endianness::Big => u32::from_be_bytes(field),
            Endianness::Little => u32::from_le_bytes(field),
        };
        Some(n as usize + fixed)
    }

    /// Takes the record at the front of `bytes`.
    pub fn next(&mut self, bytes: &[u8]) -> Result<Step, RecordError> {
        if let Some(n) = self.claimed_len(bytes).filter(|n| *n > MAX_RECORD) {
            self.number += 1;
            return Err(RecordError::Corrupt(format!(
                "the record claims {n} bytes, more than the {} MiB any capture record holds (a length field that lies)",
                MAX_RECORD >> 20
            )));
        }
        match &mut self.parser {
            Parser::Pcap { parser, header } => {
                let (rest, raw) = match parser.next_raw_packet(bytes) {
                    Ok(r) => r,
                    Err(PcapError::IncompleteBuffer) => return Ok(Step::NeedMore),
                    Err(e) => {
                        self.number += 1;
                        return Err(RecordError::Corrupt(reason(&e)));
                    }
                };
                self.number += 1;
                let link = LinkType::from_pcap(u32::from(header.datalink))
                    .ok_or(RecordError::UnknownLinkType(u32::from(header.datalink)))?;
                let frac_ns = match header.ts_resolution {
                    TsResolution::MicroSecond => raw.ts_frac as u64 * 1000,
                    TsResolution::NanoSecond => raw.ts_frac as u64,
                };
                Ok(Step::Frame(FrameAt {
                    ts_ns: raw.ts_sec as u64 * 1_000_000_000 + frac_ns,
                    link,
                    data: range_in(bytes, borrowed(&raw.data)),
                    orig_len: raw.orig_len,
                    number: self.number,
                    consumed: bytes.len() - rest.len(),
                }))
            }
            Parser::PcapNg { parser, interfaces } => {
                let (rest, block) = match parser.next_block(bytes) {
                    Ok(r) => r,
                    Err(PcapError::IncompleteBuffer) => return Ok(Step::NeedMore),
                    Err(e) => match lenient_block(bytes, parser.section().endianness) {
                        Some(Lenient::Packet { iface, units, data, orig_len, consumed }) => {
                            return self.packet(iface, units, range_in(bytes, data), orig_len, consumed);
                        }
                        Some(Lenient::Interface(interface, consumed)) => {
                            interfaces.push(interface);
                            return Ok(Step::Skip { consumed });
                        }
                        Some(Lenient::Other(consumed)) => return Ok(Step::Skip { consumed }),
                        None => {
                            self.number += 1;
                            return Err(RecordError::Corrupt(reason(&e)));
                        }
                    },
                };
                let consumed = bytes.len() - rest.len();
                let (iface, units, data, orig_len) = match block {
                    Block::SectionHeader(_) => {
                        interfaces.clear();
                        return Ok(Step::Skip { consumed });
                    }
                    Block::InterfaceDescription(idb) => {
                        interfaces.push(Interface::from_idb(&idb));
                        return Ok(Step::Skip { consumed });
                    }
                    Block::EnhancedPacket(epb) => {
                        (epb.interface_id as usize, epb.timestamp.as_nanos() as u64, epb.data, epb.original_len)
                    }
                    Block::SimplePacket(spb) => (0, 0, spb.data, spb.original_len),
                    Block::Packet(pb) => (pb.interface_id as usize, pb.timestamp, pb.data, pb.original_len),
                    _ => return Ok(Step::Skip { consumed }),
                };
                self.packet(iface, units, range_in(bytes, borrowed(&data)), orig_len, consumed)
            }
        }
    }
}

impl Records {
    /// A pcapng packet of interface `iface`: a frame, or skipped when the interface's
    /// link type is one replay cannot read.
    fn packet(
        &mut self,
        iface: usize,
        units: u64,
        data: Range<usize>,
        orig_len: u32,
        consumed: usize,
    ) -> Result<Step, RecordError> {
        let Parser::PcapNg { interfaces, .. } = &self.parser else { unreachable!("only pcapng has interfaces") };
        self.number += 1;
        let Some(interface) = interfaces.get(iface).copied() else {
            return Err(RecordError::Corrupt(format!(
                "packet names interface {iface}, which the file never described"
            )));
        };
        let Some(link) = LinkType::from_pcap(interface.linktype) else {
            // One interface of a link type replay cannot read does not make the
            // others unreadable: its frames are skipped and counted.
            match self.skipped.iter_mut().find(|s| s.interface == iface) {
                Some(s) => s.frames += 1,
                None => {
                    self.skipped.push(SkippedInterface { interface: iface, linktype: interface.linktype, frames: 1 })
                }
            }
            return Ok(Step::Skip { consumed });
        };
        Ok(Step::Frame(FrameAt { ts_ns: interface.ts_ns(units), link, data, orig_len, number: self.number, consumed }))
    }
}

/// A pcapng block read without pcap-file, for when pcap-file refuses one over what
/// pathwatch does not use: it wants every text option (a packet's comment, an
/// interface's name) to be UTF-8, and tshark does not.
enum Lenient<'a> {
    Packet { iface: usize, units: u64, data: &'a [u8], orig_len: u32, consumed: usize },
    Interface(Interface, usize),
    Other(usize),
}

/// pcapng block types read here.
const BLOCK_SECTION_HEADER: u32 = 0x0a0d_0d0a;
const BLOCK_INTERFACE: u32 = 1;
const BLOCK_ENHANCED_PACKET: u32 = 6;

/// Reads the whole block at the front of `bytes` by its fixed fields: an enhanced
/// packet's interface, time and data, an interface's link type and `if_tsresol`,
/// any other block's length. `None` when the block's own lengths do not hold (then
/// it is damaged, not merely odd), and for a section header (which sets the byte
/// order: no guessing).
fn lenient_block(bytes: &[u8], endianness: Endianness) -> Option<Lenient<'_>> {
    let u32_at = |at: usize| -> Option<u32> {
        let b: [u8; 4] = bytes.get(at..at + 4)?.try_into().ok()?;
        Some(match endianness {
            Endianness::Big => u32::from_be_bytes(b),
            Endianness::Little => u32::from_le_bytes(b),
        })
    };
    let u16_at = |at: usize| -> Option<u16> {
        let b: [u8; 2] = bytes.get(at..at + 2)?.try_into().ok()?;
        Some(match endianness {
            Endianness::Big => u16::from_be_bytes(b),
            Endianness::Little => u16::from_le_bytes(b),
        })
    };
    let kind = u32_at(0)?;
    let len = u32_at(4)? as usize;
    if len < 12 || !len.is_multiple_of(4) || u32_at(len.checked_sub(4)?)? as usize != len {
        return None;
    }
    let options_end = len - 4;
    match kind {
        BLOCK_SECTION_HEADER => None,
        BLOCK_INTERFACE => {
            let linktype = u32::from(u16_at(8)?);
            let mut units = 1_000_000;
            let mut off = 16;
            while off + 4 <= options_end {
                let (code, opt_len) = (u16_at(off)?, usize::from(u16_at(off + 2)?));
                if code == 0 {
                    break;
                }
                if code == IF_TSRESOL && opt_len >= 1 && off + 4 < options_end {
                    units = units_per_sec(bytes[off + 4]);
                }
                off += 4 + opt_len.div_ceil(4) * 4;
            }
            Some(Lenient::Interface(Interface { linktype, units_per_sec: units }, len))
        }
        BLOCK_ENHANCED_PACKET => {
            let iface = u32_at(8)? as usize;
            let units = u64::from(u32_at(12)?) << 32 | u64::from(u32_at(16)?);
            let captured = u32_at(20)? as usize;
            let orig_len = u32_at(24)?;
            if 28 + captured > options_end {
                return None;
            }
            Some(Lenient::Packet { iface, units, data: &bytes[28..28 + captured], orig_len, consumed: len })
        }
        _ => Some(Lenient::Other(len)),
    }
}
