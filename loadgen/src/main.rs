//! The `loadgen` command: see `loadgen --help` and docs/loadgen.md.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use echolab_loadgen::cli::RunArgs;
use echolab_loadgen::lab::compare::{self, CompareArgs, TrendArgs};
use echolab_loadgen::lab::merge::{self, MergeArgs};
use echolab_loadgen::lab::proxy::{self, ProxyArgs};
use echolab_loadgen::lab::suite::{self, SuiteArgs};
use echolab_loadgen::lab::sweep::{self, SweepArgs};
use echolab_loadgen::run::{self, RunError};

/// echolab's load generator: drive an echo server, verify every reply, and report latency
/// (HdrHistogram), throughput, errors by kind, and the server's cost per request.
#[derive(Debug, Parser)]
#[command(version, about, long_about = None, after_help = EXIT_CODES)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

const EXIT_CODES: &str = "Exit codes: 0 every reply verified; 1 errors (by kind in the summary), \
failed or indeterminate requests, or with --op incr a counter check that is not exactly once \
(the report is complete all the same); 2 bad flags; 3 an invalid open-loop measurement (the \
client fell behind its schedule, or the target rate was not reached); 130 interrupted.";

#[derive(Debug, Subcommand)]
enum Command {
    /// Drive one server with closed- or open-loop load and report.
    // allow_negative_numbers: `-c -1` reaches the value parser, which gives the range,
    // instead of clap's "unexpected argument '-1'".
    #[command(after_help = EXIT_CODES, allow_negative_numbers = true)]
    Run(RunArgs),
    /// Run every concurrency model through the lab's workloads, side by side, and write a
    /// report with tables and plots to `results/<run-id>/`.
    #[command(after_help = SUITE_EXIT_CODES)]
    Suite(SuiteArgs),
    /// Compare a candidate server with a baseline in paired, interleaved trials and say
    /// whether its throughput or p99 regressed (the CI gate: docs/ci.md).
    #[command(after_help = COMPARE_EXIT_CODES)]
    Compare(Box<CompareArgs>),
    /// Latency against offered load: measure the server's closed-loop capacity, then offer
    /// open-loop rates from a fraction of it to past it, and report p50/p99/p99.9/max per rate
    /// (fixed and Poisson arrivals) and the knee: the highest rate whose p99 meets --slo-p99,
    /// below the first that does not.
    #[command(after_help = SWEEP_EXIT_CODES, allow_negative_numbers = true)]
    Sweep(Box<SweepArgs>),
    /// Show the regression gate's history (`compare --history`): a table of the last runs
    /// and an SVG plot of every model's ratio per run.
    Trend(TrendArgs),
    /// Relay connections to a server and cut them per message, repeatably from a seed: a
    /// request cut on its way in (the server never runs it) or a reply cut on its way out (it
    /// ran; the client never learns). Runs until SIGINT or SIGTERM, then writes its counters.
    // allow_negative_numbers: `--cut-request -0.5` reaches the value parser, which gives the
    // range, instead of clap's "unexpected argument".
    #[command(after_help = PROXY_EXIT_CODES, allow_negative_numbers = true)]
    Proxy(ProxyArgs),
    /// Merge the segments of one run made with `run --segment I/N` (on several machines)
    /// into one report: counts summed, latency from the union of their interval logs'
    /// histograms (exact), seconds aligned by the wall clock.
    #[command(after_help = MERGE_EXIT_CODES)]
    Merge(MergeArgs),
}

const MERGE_EXIT_CODES: &str = "Exit codes: 0 merged, every segment clean; 1 merged, and some segment had errors (the report says which); 2 bad flags, or inputs refused (not every segment of one run, parameters that disagree, runs that do not overlap in time, a log that does not match its report), or a file that could not be read or written; 3 merged, and the run is not a valid measurement; 130 some segment was interrupted.";

const PROXY_EXIT_CODES: &str = "Exit codes: 0 stopped by SIGINT or SIGTERM, counters written; \
1 it could not listen, or could not write --stats-file; 2 bad flags.";

const SWEEP_EXIT_CODES: &str = "Exit codes: 0 the sweep ran (with or without a knee: the \
table says); 1 it could not measure (a capacity run failed) or some run had errors, or the \
JSON could not be written (the table is printed all the same); 2 bad flags; 130 interrupted \
(the figures so far are printed).";

const COMPARE_EXIT_CODES: &str = "Exit codes: 0 no regression; 1 a regression (throughput or \
p99, in any model); 2 bad flags, or a result file that could not be written (when nothing \
else went wrong); 3 the comparison could not be made (a server did not start, crashed, \
exited uncleanly, or a trial had errors); 4 inconclusive (too noisy to rule out a \
regression in the pairs and time allowed: run it again); 130 interrupted.";

const SUITE_EXIT_CODES: &str = "Exit codes: 0 every model ran each workload it can and exited \
cleanly (a row where the model served only some of its connections in the window, such as a \
bounded model past its workers, is how the model behaves: it is marked partial in the \
report, with its count of served connections, not a failure); 1 a model failed (did not \
start, crashed, left a process behind, or a run had errors its bound does not explain: the \
report names it); 2 bad flags.";

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Run(args) => {
            run::install_sigint();
            match args
                .config()
                .map_err(RunError::Usage)
                .and_then(|cfg| run::run(&cfg))
            {
                Ok(report) => {
                    print!("{}", report.summary());
                    ExitCode::from(report.exit_code() as u8)
                }
                Err(RunError::Usage(m)) => {
                    eprintln!("loadgen run: {m}");
                    ExitCode::from(2)
                }
                Err(RunError::Interrupted) => {
                    eprintln!("loadgen run: {}", RunError::Interrupted);
                    ExitCode::from(130)
                }
                Err(e) => {
                    eprintln!("loadgen run: {e}");
                    ExitCode::from(1)
                }
            }
        }
        Command::Suite(args) => {
            run::install_sigint();
            match suite::suite(&args) {
                Ok(report) => {
                    print!("{}", suite::tables(&report));
                    let failures: Vec<&String> = report
                        .failures
                        .iter()
                        .filter(|f| !f.starts_with("note:"))
                        .collect();
                    for f in &report.failures {
                        eprintln!("loadgen suite: {f}");
                    }
                    eprintln!(
                        "loadgen suite: {}",
                        suite::outcome(&report).replace("**", "")
                    );
                    eprintln!(
                        "loadgen suite: report in {}/report.md",
                        report_dir(&args, &report)
                    );
                    if failures.is_empty() {
                        ExitCode::SUCCESS
                    } else {
                        ExitCode::from(1)
                    }
                }
                Err(m) => {
                    eprintln!("loadgen suite: {m}");
                    ExitCode::from(2)
                }
            }
        }
        Command::Compare(args) => {
            run::install_sigint();
            match compare::compare(&args) {
                Ok(report) => {
                    print!("{}", compare::table(&report));
                    match &report.write_error {
                        // The verdict stands; a clean run whose files are missing is not clean.
                        Some(e) => {
                            eprintln!("loadgen compare: {e}");
                            ExitCode::from(match report.exit_code() {
                                0 => 2,
                                code => code,
                            })
                        }
                        None => ExitCode::from(report.exit_code()),
                    }
                }
                Err(m) => {
                    eprintln!("loadgen compare: {m}");
                    ExitCode::from(2)
                }
            }
        }
        Command::Sweep(args) => {
            run::install_sigint();
            match sweep::sweep_command(&args) {
                Ok((report, write_error)) => {
                    print!("{}", report.table());
                    if let Some(e) = &write_error {
                        eprintln!("loadgen sweep: {e}");
                    }
                    ExitCode::from(if report.interrupted {
                        130
                    } else if report.errors || write_error.is_some() {
                        1
                    } else {
                        0
                    })
                }
                Err((code, m)) => {
                    eprintln!("loadgen sweep: {m}");
                    ExitCode::from(code)
                }
            }
        }
        Command::Proxy(args) => {
            // The handler sets the flag the accept loop watches; a second signal kills.
            run::install_sigint();
            match proxy::proxy(&args) {
                Ok(_) => ExitCode::SUCCESS,
                Err(m) => {
                    eprintln!("loadgen proxy: {m}");
                    ExitCode::from(1)
                }
            }
        }
        Command::Merge(args) => match merge::merge(&args) {
            Ok(merged) => {
                print!("{}", merge::summary(&merged));
                ExitCode::from(merge::exit_code(&merged))
            }
            Err(merge::Refused(m)) => {
                eprintln!("loadgen merge: {m}");
                ExitCode::from(2)
            }
        },
        Command::Trend(args) => match compare::trend(&args) {
            Ok(table) => {
                print!("{table}");
                ExitCode::SUCCESS
            }
            Err(m) => {
                eprintln!("loadgen trend: {m}");
                ExitCode::from(1)
            }
        },
    }
}

fn report_dir(
    args: &SuiteArgs,
    report: &echolab_loadgen::lab::suite::report::SuiteReport,
) -> String {
    args.results.as_ref().map_or_else(
        || format!("results/{}", report.run_id),
        |p| p.display().to_string(),
    )
}
