//! The `loadgen` command: see `loadgen --help` and docs/loadgen.md.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use echolab_loadgen::cli::RunArgs;
use echolab_loadgen::run::{self, RunError};

/// echolab's load generator: drive an echo server, verify every reply, and report latency
/// (HdrHistogram), throughput, errors by kind, and the server's cost per request.
#[derive(Debug, Parser)]
#[command(version, about, long_about = None, after_help = EXIT_CODES)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

const EXIT_CODES: &str = "Exit codes: 0 every reply verified; 1 errors (by kind in the summary); \
2 bad flags; 3 an invalid open-loop measurement (the client fell behind its schedule, or the \
target rate was not reached).";

#[derive(Debug, Subcommand)]
enum Command {
    /// Drive one server with closed- or open-loop load and report.
    #[command(after_help = EXIT_CODES)]
    Run(RunArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Run(args) => {
            run::install_sigint();
            match run::run(&args) {
                Ok(report) => {
                    print!("{}", report.summary());
                    ExitCode::from(report.exit_code() as u8)
                }
                Err(RunError::Usage(m)) => {
                    eprintln!("loadgen run: {m}");
                    ExitCode::from(2)
                }
                Err(e) => {
                    eprintln!("loadgen run: {e}");
                    ExitCode::from(1)
                }
            }
        }
    }
}
