//! The command line (DESIGN.md "CLI contract"), as clap definitions. The man page
//! and shell completions are generated from these.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// pathwatch: names DNS probe storms, blocked DTLS and PMTU black holes, live with
/// eBPF/XDP or from captures.
#[derive(Debug, Parser)]
#[command(name = "pathwatch", version, about, long_about = None, propagate_version = true)]
pub struct Cli {
    /// The command.
    #[command(subcommand)]
    pub command: Command,
}

/// Commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Attach to live interfaces and report findings as they happen.
    Run(RunArgs),
    /// Read pcap/pcapng captures and report the findings in them.
    Replay(ReplayCmd),
    /// Reproduce the field problems with real daemons in network namespaces.
    Lab(LabArgs),
    /// Check whether this host can run the agent, and say how to fix what is missing.
    Doctor,
    /// Configuration file helpers.
    Config {
        /// What to do.
        #[command(subcommand)]
        action: ConfigAction,
    },
    /// Print shell completions.
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff) to standard output.
    Man,
}

/// `config` subcommands.
#[derive(Debug, Subcommand)]
pub enum ConfigAction {
    /// Print the default configuration, commented.
    Default,
    /// Check a configuration file and print where it is wrong.
    Check {
        /// The file.
        file: PathBuf,
    },
}

/// XDP attach mode.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum XdpMode {
    /// Driver (native) mode where the interface supports it, else generic (skb).
    Auto,
    /// Driver mode only.
    Native,
    /// Generic (skb) mode.
    Skb,
}

/// Options common to commands that print findings.
#[derive(Debug, Args)]
pub struct OutputArgs {
    /// Write JSON lines to PATH, or to standard output with `-` (human output then
    /// goes to standard error).
    #[arg(long, value_name = "PATH|-")]
    pub json: Option<String>,
    /// Configuration file (TOML; `pathwatch config default` prints one).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Print decoded events too (-v).
    #[arg(short, long, action = clap::ArgAction::Count)]
    pub verbose: u8,
}

/// `run` options.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// Interface to watch (repeat for more; a glob such as 'vpns*' follows interfaces
    /// as they come and go).
    #[arg(short = 'i', long = "interface", value_name = "IFACE", required = true)]
    pub interfaces: Vec<String>,
    /// XDP attach mode.
    #[arg(long, value_enum, default_value_t = XdpMode::Auto)]
    pub xdp_mode: XdpMode,
    /// Do not attach the TC egress program.
    #[arg(long)]
    pub no_egress: bool,
    /// Serve Prometheus metrics on [ADDR:]PORT (a port alone listens on 127.0.0.1).
    #[arg(long, value_name = "[ADDR:]PORT")]
    pub metrics: Option<String>,
    /// Stop after this many seconds.
    #[arg(long, value_name = "SECS")]
    pub duration: Option<f64>,
    /// Output options.
    #[command(flatten)]
    pub output: OutputArgs,
}

/// `replay` options.
#[derive(Debug, Args)]
pub struct ReplayCmd {
    /// Capture files (pcap or pcapng), merged in timestamp order.
    #[arg(required = true, value_name = "FILE")]
    pub files: Vec<PathBuf>,
    /// Classify with the real kernel programs (BPF_PROG_TEST_RUN) instead of the
    /// userspace classifier.
    #[arg(long)]
    pub kernel: bool,
    /// Output options.
    #[command(flatten)]
    pub output: OutputArgs,
}

/// `lab` options.
#[derive(Debug, Args)]
pub struct LabArgs {
    /// Scenarios to run (all when none is named): dns-probe-storm, vpn-ok,
    /// dtls-blocked, dtls-port-mismatch, pmtu-black-hole, pmtu-ok, https-clients,
    /// vpn-reconnect-loop, dns-resolver-outage.
    #[arg(value_name = "SCENARIO")]
    pub scenarios: Vec<String>,
    /// Write JSON lines to PATH, or to standard output with `-`.
    #[arg(long, value_name = "PATH|-")]
    pub json: Option<String>,
    /// Leave the namespaces up afterwards (and print how to remove them).
    #[arg(long)]
    pub keep: bool,
    /// The pathwatch binary to run on the lab gateway (default: this one).
    #[arg(long, value_name = "PATH", hide = true)]
    pub agent: Option<PathBuf>,
}
