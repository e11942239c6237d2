//! Empty on purpose: the programs are the `pathwatch-ebpf` binary (see `main.rs`).
//! This library target exists so that `agent` can list the crate as a
//! build-dependency and be rebuilt when it changes.
#![no_std]
