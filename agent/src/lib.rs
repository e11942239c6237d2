//! pathwatch: names DNS probe storms, blocked DTLS and PMTU black holes from packets
//! seen by eBPF at line rate, or read from captures.
//!
//! The crate is the `pathwatch` binary's library: the userspace classifier (the kernel
//! programs' header walk run on captured frames), the kernel loader and
//! BPF_PROG_TEST_RUN driver, the event decoders, the detectors, and the commands.

pub mod caps;
pub mod capture;
pub mod classify;
pub mod cli;
pub mod config;
pub mod counts;
pub mod decode;
pub mod detect;
pub mod doctor;
pub mod drops;
pub mod event;
pub mod kernel;
pub mod lab;
pub mod output;
pub mod printable;
pub mod render;
pub mod replay;
pub mod report;
pub mod run;
