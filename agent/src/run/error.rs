//! Why `pathwatch run` could not start or keep going, and the exit code each reason
//! gets (DESIGN.md, CLI contract: 1 runtime failure, 2 usage or input error). The
//! mapping lives here only, so a new failure is one variant and one match arm.

use std::{io, net::SocketAddr};

use super::attach::AttachError;
use crate::{config::ConfigError, kernel::KernelError};

/// A failure that ends `run` before a clean shutdown. Its message is printed after
/// `error: `.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The `--config` file cannot be read or is invalid.
    #[error("{0}")]
    Config(#[from] ConfigError),
    /// The `--json` file cannot be opened.
    #[error("{0}")]
    Output(io::Error),
    /// The async runtime cannot start.
    #[error("cannot start the runtime: {0}")]
    Runtime(io::Error),
    /// The kernel programs cannot be loaded (permission is the operator's to fix).
    #[error("{0}")]
    Load(KernelError),
    /// The event ring buffer cannot be opened.
    #[error("{0}")]
    Events(KernelError),
    /// An interface named on the command line cannot be watched.
    #[error("{0}")]
    Attach(#[from] AttachError),
    /// `--metrics` (or `metrics.listen`) is not an address.
    #[error("{0}")]
    MetricsAddress(String),
    /// The metrics address cannot be bound.
    #[error("--metrics {addr}: {source}")]
    MetricsBind {
        /// The address.
        addr: SocketAddr,
        /// Why not.
        source: io::Error,
    },
    /// The ring buffer cannot be registered with the runtime.
    #[error("cannot watch the ring buffer: {0}")]
    Ring(io::Error),
    /// SIGINT, SIGTERM or SIGHUP cannot be caught.
    #[error("cannot install signal handlers")]
    Signals,
}

impl RunError {
    /// The process exit code: 2 for what the operator gave or must change (input,
    /// permission, an interface that is missing or held by another program, a metrics
    /// address), 1 for a failure at run time.
    pub fn exit_code(&self) -> u8 {
        match self {
            RunError::Config(_)
            | RunError::Output(_)
            | RunError::Load(KernelError::Permission(_))
            | RunError::Attach(AttachError::NoSuchInterface(_) | AttachError::Busy { .. })
            | RunError::Attach(AttachError::Permission(_))
            | RunError::MetricsAddress(_)
            | RunError::MetricsBind { .. } => 2,
            RunError::Runtime(_)
            | RunError::Load(KernelError::Other { .. })
            | RunError::Events(_)
            | RunError::Attach(AttachError::Other { .. })
            | RunError::Ring(_)
            | RunError::Signals => 1,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn input_and_permission_exit_2_and_run_time_failures_exit_1() {
        let io = || io::Error::other("x");
        let kernel_other = || KernelError::Other { context: "c".into(), source: anyhow::anyhow!("x") };
        let bad_config = crate::config::Config::parse("[dns\n", std::path::Path::new("f.toml")).unwrap_err();
        let two = [
            RunError::Config(bad_config),
            RunError::Output(io()),
            RunError::Load(KernelError::Permission("p".into())),
            RunError::Attach(AttachError::NoSuchInterface("eth9".into())),
            RunError::Attach(AttachError::Busy { iface: "eth0".into(), holder: String::new() }),
            RunError::Attach(AttachError::Permission("eth0".into())),
            RunError::MetricsAddress("bad".into()),
            RunError::MetricsBind { addr: ([127, 0, 0, 1], 9).into(), source: io() },
        ];
        for e in &two {
            assert_eq!(e.exit_code(), 2, "{e:?}");
        }
        let one = [
            RunError::Runtime(io()),
            RunError::Load(kernel_other()),
            RunError::Events(KernelError::Permission("p".into())),
            RunError::Attach(AttachError::Other { iface: "eth0".into(), what: "XDP", detail: "d".into() }),
            RunError::Ring(io()),
            RunError::Signals,
        ];
        for e in &one {
            assert_eq!(e.exit_code(), 1, "{e:?}");
        }
    }

    #[test]
    fn messages_keep_their_context() {
        let bind = RunError::MetricsBind { addr: ([127, 0, 0, 1], 9).into(), source: io::Error::other("in use") };
        assert_eq!(bind.to_string(), "--metrics 127.0.0.1:9: in use");
        assert_eq!(RunError::Runtime(io::Error::other("x")).to_string(), "cannot start the runtime: x");
        assert_eq!(RunError::Ring(io::Error::other("x")).to_string(), "cannot watch the ring buffer: x");
    }
}
