//! DNS names as bytes, and their presentation form.
//!
//! A name off the wire can hold any byte. It is kept as raw label bytes (lowercased
//! ASCII, for case-insensitive comparison) and shown in the master-file presentation
//! format of RFC 1035 §5.1: printable ASCII as is, `.` and `\` inside a label
//! escaped with a backslash, every other byte as `\DDD`. The result is plain printable
//! ASCII, safe on a terminal and in JSON.

use std::fmt;

/// A DNS name: its labels' raw bytes, ASCII letters lowercased, stored as one
/// allocation (each label prefixed by its length, as on the wire).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DnsName {
    wire: Box<[u8]>,
}

impl DnsName {
    /// A name from raw labels (lowercasing ASCII letters). Labels longer than 255
    /// bytes, which the wire format cannot carry, are cut.
    pub fn from_labels<'a>(labels: impl IntoIterator<Item = &'a [u8]>) -> DnsName {
        let mut wire = Vec::new();
        for label in labels {
            let label = &label[..label.len().min(255)];
            wire.push(label.len() as u8);
            wire.extend(label.iter().map(u8::to_ascii_lowercase));
        }
        DnsName { wire: wire.into_boxed_slice() }
    }

    /// A name from its labels as on the wire, each after its length byte, without
    /// the root's zero: `wire` must be such a run of labels of at most 63 bytes each
    /// (the caller walked them). The same name as [`DnsName::from_labels`] makes of
    /// those labels, in one allocation of the exact size.
    pub(crate) fn from_wire_labels(wire: &[u8]) -> DnsName {
        DnsName { wire: wire.iter().map(u8::to_ascii_lowercase).collect() }
    }

    /// A name from dotted text, as written in a config file (`mus.cisco.com`).
    pub fn from_dotted(text: &str) -> DnsName {
        DnsName::from_labels(text.trim_end_matches('.').split('.').filter(|l| !l.is_empty()).map(str::as_bytes))
    }

    /// The raw labels.
    pub fn labels(&self) -> impl Iterator<Item = &[u8]> {
        let mut rest = &self.wire[..];
        std::iter::from_fn(move || {
            let (&len, tail) = rest.split_first()?;
            let (label, tail) = tail.split_at(len as usize);
            rest = tail;
            Some(label)
        })
    }

    /// A 64-bit key for the name, for tables that hold the name itself only once: aHash
    /// with a per-process random seed, so names chosen by whoever sends the packets
    /// cannot be made to collide.
    pub fn key(&self) -> u64 {
        static STATE: std::sync::OnceLock<ahash::RandomState> = std::sync::OnceLock::new();
        STATE.get_or_init(ahash::RandomState::new).hash_one(&self.wire)
    }

    /// Bytes held on the heap (for memory accounting).
    pub fn heap_bytes(&self) -> usize {
        self.wire.len()
    }
}

impl fmt::Display for DnsName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.wire.is_empty() {
            return f.write_str(".");
        }
        for (i, label) in self.labels().enumerate() {
            if i > 0 {
                f.write_str(".")?;
            }
            for &b in label {
                match b {
                    b'.' | b'\\' => write!(f, "\\{}", b as char)?,
                    0x21..=0x7e => write!(f, "{}", b as char)?,
                    _ => write!(f, "\\{b:03}")?,
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_names_are_lowercased_and_dotted() {
        assert_eq!(DnsName::from_labels([&b"MUS"[..], b"Cisco", b"com"]).to_string(), "mus.cisco.com");
        assert_eq!(DnsName::from_dotted("MUS.cisco.com."), DnsName::from_dotted("mus.cisco.com"));
        assert_eq!(DnsName::from_labels(std::iter::empty()).to_string(), ".");
    }

    #[test]
    fn hostile_bytes_are_escaped_to_printable_ascii() {
        let name = DnsName::from_labels([&b"a\x1b[31mred\x07"[..], b"x.y\\z", b"\x00\xff \""]);
        let shown = name.to_string();
        assert_eq!(shown, "a\\027[31mred\\007.x\\.y\\\\z.\\000\\255\\032\"");
        assert!(shown.bytes().all(|b| (0x21..=0x7e).contains(&b)));
    }
}
