//! Everything the kernel programs and the agent must agree on, in one `no_std` crate.
//!
//! The kernel programs (`agent-ebpf`) and replay (`agent`) agree by construction on what
//! lives here: the header walk itself ([`wire`], generic over how the bytes are read),
//! the layout of every type that crosses the boundary, map and program names, packet
//! classes, and the protocol constants and predicates.
#![no_std]

#[cfg(test)]
extern crate std;

pub mod class;
pub mod config;
pub mod drop;
pub mod event;
pub mod flow;
pub mod names;
pub mod proto;
pub mod stats;
pub mod wire;

pub use class::{Class, Direction};
pub use config::KernelConfig;
pub use event::{EventHeader, EventInfo, EventKind};
pub use flow::{FlowKey, FlowState};
