//! Decoders for the bytes events carry: what the detectors read out of a snap.
//!
//! One protocol a file. Every decoder takes untrusted bytes, never panics, never
//! allocates in proportion to a length field, and returns `None` (or a partial
//! result) for anything it cannot read.

pub mod dns;
pub mod icmp;
pub mod name;
