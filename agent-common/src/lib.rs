//! Everything the kernel programs and the agent must agree on, in one `no_std` crate.
//!
//! The kernel side (`agent-ebpf`) and the userspace classifier (`agent`) are written
//! independently and checked against each other frame by frame; what they share lives
//! here so they agree by construction: the layout of every type that crosses the
//! boundary, map and program names, packet classes, and the small protocol predicates
//! (what counts as a DTLS record, an ICMP error, a large packet).
#![no_std]

pub mod class;
pub mod config;
pub mod event;
pub mod flow;
pub mod names;
pub mod proto;
pub mod stats;

pub use class::{Class, Direction};
pub use config::KernelConfig;
pub use event::{EventHeader, EventInfo, EventKind};
pub use flow::{FlowKey, FlowState};
