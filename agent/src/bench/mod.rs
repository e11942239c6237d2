//! Benchmarks (`cargo xtask bench`, through the `pathwatch-bench` binary). Each
//! measures side by side in one run and reports ratios, because this machine is shared
//! and noisy.

pub mod consumer;
pub mod flood;
pub mod frames;
pub mod kernel;
pub mod memory;
pub mod replay;
