//! The flags of `loadgen compare` and `loadgen trend`, and the parsers of their values.
//!
//! Kept apart from the code that acts on them so that the gate's whole interface reads in one
//! place, and so the statistics and the trials take plain values (`f64`, [`Mode`]) rather than
//! parse text themselves.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use echolab_protocol::units::{parse_duration, parse_timeout};
use serde::{Deserialize, Serialize};

use crate::cli::LoadArgs;

/// `loadgen compare`: paired, interleaved trials of a baseline and a candidate server, and a
/// verdict on the candidate's throughput and p99 latency.
#[derive(Debug, Clone, Args)]
#[command(group = clap::ArgGroup::new("what").required(true).args(["baseline", "baseline_bin_dir"]))]
pub struct CompareArgs {
    /// The baseline server, as a shell command that either contains {addr} (replaced by a
    /// free 127.0.0.1 port) or prints `listening on ADDR`. Started afresh for every trial.
    #[arg(long, value_name = "COMMAND", requires = "candidate")]
    pub baseline: Option<String>,

    /// The candidate server, given like --baseline.
    #[arg(long, value_name = "COMMAND", requires = "baseline")]
    pub candidate: Option<String>,

    /// Instead of two commands: compare every echolab model (thread, thread-pool, fork,
    /// prefork-shared|locked|reuseport, eventloop-select|poll|epoll) built in this directory ...
    #[arg(
        long,
        value_name = "DIR",
        requires = "candidate_bin_dir",
        conflicts_with_all = ["baseline", "candidate"]
    )]
    pub baseline_bin_dir: Option<PathBuf>,

    /// ... against the same model built in this one.
    #[arg(long, value_name = "DIR", requires = "baseline_bin_dir")]
    pub candidate_bin_dir: Option<PathBuf>,

    /// With the bin dirs: only these models (comma-separated).
    #[arg(long, value_delimiter = ',', requires = "baseline_bin_dir")]
    pub only: Option<Vec<String>>,

    /// With --baseline/--candidate: the name the report gives the server.
    #[arg(long, default_value = "server")]
    pub name: String,

    /// Extra arguments for every baseline server (not --addr, --grace, --max-connections or
    /// --stats-file, which the comparison gives echolab's servers itself).
    #[arg(
        long,
        value_name = "ARGS",
        default_value = "",
        allow_hyphen_values = true
    )]
    pub baseline_args: String,

    /// Extra arguments for every candidate server, e.g. "--debug-spin-ns 500" to check that
    /// the gate catches a slowdown.
    #[arg(
        long,
        value_name = "ARGS",
        default_value = "",
        allow_hyphen_values = true
    )]
    pub candidate_args: String,

    /// Extra arguments for one model's candidate only (after --candidate-args). Repeatable.
    #[arg(
        long = "candidate-args-for",
        value_name = "MODEL=ARGS",
        allow_hyphen_values = true
    )]
    pub candidate_args_for: Vec<String>,

    /// Workers for server-thread --pool and server-prefork --workers (bin-dir mode).
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u32).range(1..=4096))]
    pub workers: u32,

    /// What load each trial offers: the flags of `loadgen run`.
    #[command(flatten)]
    pub load: LoadArgs,

    /// Measured time per trial. Short, so that the two trials of a pair run within a fraction
    /// of a second of each other, where a shared machine's drift is still the same for both.
    #[arg(short, long, default_value = "100ms", value_parser = parse_duration)]
    pub duration: Duration,

    /// Unrecorded lead-in per trial (connections opened, first requests answered).
    #[arg(long, default_value = "50ms", value_parser = parse_duration)]
    pub warmup: Duration,

    /// Per-request limit inside a trial.
    #[arg(long, default_value = "1s", value_parser = parse_timeout)]
    pub timeout: Duration,

    /// How the two trials of a pair share the machine: side-by-side (both servers at once, on
    /// the same CPUs, each driven by its own loadgen run over the same window) or alternate
    /// (one after the other).
    #[arg(long, value_enum, default_value_t = Mode::Alternate)]
    pub mode: Mode,

    /// Pairs of trials (one baseline and one candidate each) per server, at least (unless the
    /// verdict settles before: --early-stop). At least 8:
    /// the bootstrap interval of a handful of pairs is too narrow to trust.
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u32).range(8..=10_000))]
    pub pairs: u32,

    /// Pairs per server at most: past --pairs, a server whose interval is still wider than
    /// ±--precision gets more pairs, up to this many (or until --time-limit).
    #[arg(long, default_value_t = 150, value_parser = clap::value_parser!(u32).range(8..=10_000))]
    pub max_pairs: u32,

    /// Stop giving a model pairs once its verdicts are settled, from this many pairs on: once
    /// the estimate and its whole interval lie on one side of every line a verdict is drawn at
    /// (1 ± the threshold, for throughput and for a gated p99), more pairs only narrow the
    /// interval. This may stop a model before --pairs. `off` runs every model to --precision
    /// (the gate before the early stop; a proof uses it to replay where each floor would have
    /// stopped). At least 8.
    #[arg(long, default_value = "12", value_parser = parse_early_stop)]
    pub early_stop: EarlyStop,

    /// The interval half-width that is precise enough to stop adding pairs (default: half the
    /// threshold).
    #[arg(long, value_parser = parse_percent)]
    pub precision: Option<f64>,

    /// No new round of pairs (one more pair for each server still short of --precision) starts
    /// past this much time; each server's --pairs always run. A server still short of
    /// --precision then gets the verdict `inconclusive` if its interval reaches a regression.
    #[arg(long, default_value = "6m", value_parser = parse_duration)]
    pub time_limit: Duration,

    /// A throughput change smaller than this is "no significant change", however certain
    /// (5%, or 5).
    #[arg(long, default_value = "5%", value_parser = parse_percent)]
    pub threshold: f64,

    /// The same for p99 latency, which is much noisier; `off` reports p99 without gating on it.
    #[arg(long, default_value = "25%", value_parser = parse_percent_or_off)]
    pub p99_threshold: Gate,

    /// Confidence level of the intervals, in percent.
    #[arg(long, default_value = "95", value_parser = parse_confidence)]
    pub confidence: f64,

    /// Bootstrap resamples per interval.
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u32).range(100..=1_000_000))]
    pub resamples: u32,

    /// Seed of the bootstrap's random numbers: the same trials always give the same interval.
    #[arg(long, default_value_t = 0x5eed)]
    pub seed: u64,

    /// Write every trial, estimate and verdict as JSON.
    #[arg(long, value_name = "PATH")]
    pub json: Option<PathBuf>,

    /// Write the table as Markdown (for a pull-request comment).
    #[arg(long, value_name = "PATH")]
    pub markdown: Option<PathBuf>,

    /// Append this comparison to a history file, one JSON object per line (`loadgen trend`
    /// plots it).
    #[arg(long, value_name = "PATH")]
    pub history: Option<PathBuf>,

    /// What the baseline is, for the report and the history (a git ref, say).
    #[arg(long, default_value = "baseline")]
    pub baseline_label: String,

    /// What the candidate is.
    #[arg(long, default_value = "candidate")]
    pub candidate_label: String,

    /// Let the scheduler place servers and loadgen (default: servers on the first half of the
    /// CPUs, loadgen on the second).
    #[arg(long)]
    pub no_pin: bool,
}

/// How the two trials of a pair share the machine (see the module documentation).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// Both servers at once, on the same CPUs, over the same window.
    SideBySide,
    /// One after the other, a fraction of a second apart.
    Alternate,
}

/// Parses `5%`, `5` or `2.5%` into a fraction (0.05), between 0 and 100% exclusive.
pub fn parse_percent(s: &str) -> Result<f64, String> {
    let t = s.trim();
    let t = t.strip_suffix('%').unwrap_or(t);
    let v: f64 = t
        .trim()
        .parse()
        .map_err(|_| format!("'{s}' is not a percentage (e.g. 5%)"))?;
    if !(v.is_finite() && v > 0.0 && v < 100.0) {
        return Err(format!("'{s}': a percentage above 0 and below 100"));
    }
    Ok(v / 100.0)
}

/// A threshold that can be switched off: `Gate(None)` reports without gating.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Gate(pub Option<f64>);

fn parse_percent_or_off(s: &str) -> Result<Gate, String> {
    if s.trim().eq_ignore_ascii_case("off") {
        Ok(Gate(None))
    } else {
        parse_percent(s).map(|t| Gate(Some(t)))
    }
}

/// `--early-stop`: the floor in pairs, or `None` for off.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EarlyStop(pub Option<u32>);

fn parse_early_stop(s: &str) -> Result<EarlyStop, String> {
    if s.trim().eq_ignore_ascii_case("off") {
        return Ok(EarlyStop(None));
    }
    match s.trim().parse::<u32>() {
        Ok(n) if n >= 8 => Ok(EarlyStop(Some(n))),
        _ => Err(format!(
            "'{s}': a number of pairs, 8 or more (fewer give an interval too narrow to trust), or off"
        )),
    }
}

fn parse_confidence(s: &str) -> Result<f64, String> {
    let v = parse_percent(s)?;
    if !(0.5..1.0).contains(&v) {
        return Err(format!("'{s}': a confidence level from 50 to below 100"));
    }
    Ok(v)
}

/// `loadgen trend`: the regression gate's history, as a table and a plot.
#[derive(Debug, Clone, Args)]
pub struct TrendArgs {
    /// The history file that `loadgen compare --history` appends to (JSON lines).
    pub history: PathBuf,

    /// Write the plot here (default: the history's path with `.svg` for its extension).
    #[arg(long, value_name = "PATH")]
    pub svg: Option<PathBuf>,

    /// Rows of the table: the last this many gate runs.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..))]
    pub last: u32,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentages() {
        assert_eq!(parse_percent("5%"), Ok(0.05));
        assert_eq!(parse_percent("2.5"), Ok(0.025));
        assert!(parse_percent("0").is_err());
        assert!(parse_percent("100%").is_err());
        assert!(parse_percent("-3").is_err());
        assert!(parse_percent("five").is_err());
        assert_eq!(parse_percent_or_off("off"), Ok(Gate(None)));
        assert_eq!(parse_early_stop("off"), Ok(EarlyStop(None)));
        assert_eq!(parse_early_stop("12"), Ok(EarlyStop(Some(12))));
        assert!(parse_early_stop("7").is_err());
        assert!(parse_early_stop("soon").is_err());
        assert!(parse_confidence("40").is_err());
        assert_eq!(parse_confidence("95"), Ok(0.95));
    }
}
