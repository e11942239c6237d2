//! `pathwatch-bench`: the benchmark runner behind `cargo xtask bench`.
//!
//! `pathwatch-bench kernel [--json]` and so on; each prints a table, or one JSON
//! object with `--json`.

use std::process::ExitCode;

use clap::{Parser, ValueEnum};
use pathwatch::bench;

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Which {
    /// Kernel ns/packet via BPF_PROG_TEST_RUN.
    Kernel,
}

#[derive(Parser)]
#[command(about = "pathwatch benchmarks (run through `cargo xtask bench`)")]
struct Args {
    /// Which benchmark.
    which: Which,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    json: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    match args.which {
        Which::Kernel => match bench::kernel::run() {
            Ok(b) => {
                if args.json {
                    println!("{}", b.to_json());
                } else {
                    for l in b.table() {
                        println!("{l}");
                    }
                }
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e:#}");
                ExitCode::from(1)
            }
        },
    }
}
