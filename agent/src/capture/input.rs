//! Where a capture's bytes come from: a file, or standard input for `-` (as tcpdump
//! and tshark read it), decompressed when it starts with the magic number of gzip,
//! zstd or xz. Captures are often kept compressed (`.pcap.gz` from rotating capture
//! jobs, `.pcapng.zst` from archives); the format is told by the bytes, not the name.

use std::{
    fs::File,
    io::{self, Read},
    path::Path,
};

/// How a capture's bytes are compressed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compression {
    /// Not compressed.
    None,
    /// gzip (RFC 1952), one or more members.
    Gzip,
    /// Zstandard, one or more frames.
    Zstd,
    /// xz, one or more streams.
    Xz,
}

impl Compression {
    /// The compression whose magic number starts `bytes`.
    pub fn sniff(bytes: &[u8]) -> Compression {
        if bytes.starts_with(&[0x1f, 0x8b]) {
            Compression::Gzip
        } else if bytes.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            Compression::Zstd
        } else if bytes.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0]) {
            Compression::Xz
        } else {
            Compression::None
        }
    }

    /// The name used in messages ("gzip"), empty when not compressed.
    pub fn name(self) -> &'static str {
        match self {
            Compression::None => "",
            Compression::Gzip => "gzip",
            Compression::Zstd => "zstd",
            Compression::Xz => "xz",
        }
    }
}

/// Bytes of magic needed to tell every compression apart.
const SNIFF_LEN: usize = 6;

/// Whether `path` names standard input.
pub fn is_stdin(path: &Path) -> bool {
    path.as_os_str() == "-"
}

/// Opens `path` (`-`: standard input) and undoes its compression.
pub fn open(path: &Path) -> io::Result<(Box<dyn Read + Send>, Compression)> {
    let raw: Box<dyn Read + Send> = if is_stdin(path) { Box::new(io::stdin()) } else { Box::new(File::open(path)?) };
    decompress(raw)
}

/// Reads the first bytes of `raw` and wraps it in the decoder they call for; the
/// bytes read are given back in front.
pub fn decompress(mut raw: Box<dyn Read + Send>) -> io::Result<(Box<dyn Read + Send>, Compression)> {
    let mut head = Vec::with_capacity(SNIFF_LEN);
    // A pipe may deliver the magic a few bytes at a time.
    while head.len() < SNIFF_LEN {
        let mut byte = [0u8; SNIFF_LEN];
        let n = match raw.read(&mut byte[..SNIFF_LEN - head.len()]) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if n == 0 {
            break;
        }
        head.extend_from_slice(&byte[..n]);
    }
    let compression = Compression::sniff(&head);
    let whole: Box<dyn Read + Send> = Box::new(io::Cursor::new(head).chain(raw));
    let reader: Box<dyn Read + Send> = match compression {
        Compression::None => whole,
        Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(io::BufReader::new(whole))),
        Compression::Zstd => Box::new(zstd::stream::read::Decoder::new(whole)?),
        Compression::Xz => Box::new(liblzma::read::XzDecoder::new_multi_decoder(whole)),
    };
    Ok((reader, compression))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    const PLAIN: &[u8] = b"\xd4\xc3\xb2\xa1 a capture, as far as this test cares";

    fn roundtrip(packed: Vec<u8>, want: Compression) {
        let (mut r, c) = decompress(Box::new(io::Cursor::new(packed))).unwrap();
        assert_eq!(c, want);
        let mut out = Vec::new();
        r.read_to_end(&mut out).unwrap();
        assert_eq!(out, PLAIN);
    }

    #[test]
    fn each_compression_is_told_by_its_magic_and_undone() {
        roundtrip(PLAIN.to_vec(), Compression::None);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(PLAIN).unwrap();
        roundtrip(gz.finish().unwrap(), Compression::Gzip);
        roundtrip(zstd::encode_all(PLAIN, 1).unwrap(), Compression::Zstd);
        let mut xz = liblzma::write::XzEncoder::new(Vec::new(), 1);
        xz.write_all(PLAIN).unwrap();
        roundtrip(xz.finish().unwrap(), Compression::Xz);
    }

    #[test]
    fn a_magic_delivered_a_byte_at_a_time_is_still_recognised() {
        struct Trickle(io::Cursor<Vec<u8>>);
        impl Read for Trickle {
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                let n = buf.len().min(1);
                self.0.read(&mut buf[..n])
            }
        }
        let packed = zstd::encode_all(PLAIN, 1).unwrap();
        let (mut r, c) = decompress(Box::new(Trickle(io::Cursor::new(packed)))).unwrap();
        assert_eq!(c, Compression::Zstd);
        let mut out = Vec::new();
        r.read_to_end(&mut out).unwrap();
        assert_eq!(out, PLAIN);
    }

    #[test]
    fn a_gzip_stream_cut_short_is_an_error_after_what_it_held() {
        let big: Vec<u8> = (0..200_000u32).flat_map(|i| i.to_le_bytes()).collect();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&big).unwrap();
        let mut packed = gz.finish().unwrap();
        packed.truncate(packed.len() / 2);
        let (mut r, _) = decompress(Box::new(io::Cursor::new(packed))).unwrap();
        let mut out = vec![0u8; 4096];
        let mut got = 0usize;
        let err = loop {
            match r.read(&mut out) {
                Ok(0) => panic!("a cut stream ended cleanly after {got} bytes"),
                Ok(n) => got += n,
                Err(e) => break e,
            }
        };
        assert!(got > 0, "the bytes before the cut are delivered first");
        assert!(got < big.len());
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof, "{err}");
    }
}
