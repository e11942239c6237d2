//! The `pathwatch` binary: parses the command line and hands over to the library.

use std::process::ExitCode;

use clap::{CommandFactory, Parser};
use pathwatch::{
    cli::{Cli, Command, ConfigAction, OutputArgs},
    config::{Config, DEFAULT_TOML},
    output::{JsonTarget, Output},
    replay::{ReplayArgs, replay},
};

fn load_config(args: &OutputArgs) -> Result<Config, ExitCode> {
    match &args.config {
        None => Ok(Config::default()),
        Some(path) => Config::load(path).map_err(|e| {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }),
    }
}

fn output(args: &OutputArgs) -> Result<Output, ExitCode> {
    Output::new(JsonTarget::from_arg(args.json.as_deref()), args.verbose).map(Output::for_command).map_err(|e| {
        eprintln!("error: {e}");
        ExitCode::from(2)
    })
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        // Warnings by default (the few there are name a failure an operator must
        // see); PATHWATCH_LOG=debug etc. for more.
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("PATHWATCH_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    match cli.command {
        Command::Replay(cmd) => {
            let config = match load_config(&cmd.output) {
                Ok(c) => c,
                Err(code) => return code,
            };
            let mut out = match output(&cmd.output) {
                Ok(o) => o,
                Err(code) => return code,
            };
            ExitCode::from(replay(ReplayArgs { files: cmd.files, kernel: cmd.kernel, config }, &mut out))
        }
        Command::Run(args) => ExitCode::from(pathwatch::run::main(args)),
        Command::Lab(args) => ExitCode::from(pathwatch::lab::main(args)),
        Command::Doctor => ExitCode::from(pathwatch::doctor::main()),
        Command::Config { action: ConfigAction::Default } => {
            print!("{DEFAULT_TOML}");
            ExitCode::SUCCESS
        }
        Command::Config { action: ConfigAction::Check { file } } => match Config::load(&file) {
            Ok(_) => {
                println!("{}: ok", pathwatch::printable::path(&file));
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::from(2)
            }
        },
        Command::Completions { shell } => {
            clap_complete::generate(shell, &mut Cli::command(), "pathwatch", &mut std::io::stdout());
            ExitCode::SUCCESS
        }
        Command::Man => {
            let man = clap_mangen::Man::new(Cli::command());
            match man.render(&mut std::io::stdout()) {
                // A closed pipe (`pathwatch man | head`) is not an error.
                Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
                    eprintln!("error: {e}");
                    ExitCode::from(1)
                }
                _ => ExitCode::SUCCESS,
            }
        }
    }
}
