//! `loadgen compare`: is the candidate slower than the baseline? A regression gate that holds
//! on a shared, noisy machine.
//!
//! On such a machine the same build's throughput drifts by 10–30% from one minute to the next,
//! so a stored absolute baseline is useless and two runs minutes apart cannot be compared. What
//! does hold is a comparison made *side by side*: the baseline and the candidate run in pairs,
//! back to back, so whatever the machine is doing at that moment hits both; the order inside a
//! pair alternates (A B, B A, A B, ...) so neither side always runs on a warmer (or more
//! disturbed) machine. Each pair gives one ratio, candidate over baseline, in which the drift
//! cancels. The ratios are then summarised ([`paired_ratio`]):
//!
//! - the estimate is a trimmed geometric mean of the pair ratios (the best and the worst fifth
//!   of the pairs are dropped): one pair hit by a burst of other work cannot decide the verdict;
//! - its confidence interval comes from a bootstrap over the pairs (pairs resampled with
//!   replacement, the estimate recomputed each time, the middle 95% kept), which assumes
//!   nothing about the shape of the noise;
//! - the verdict ([`Verdict`]) is a regression only when the change is both *significant* (the
//!   interval excludes 1) and *relevant* (the estimate is beyond `--threshold`). Either alone
//!   fails on a noisy machine: significance alone flags a real 0.5% change nobody cares about,
//!   a threshold alone flags noise.
//!
//! Every trial gets a fresh server: a server that happened to start badly (a prefork whose
//! workers landed unevenly, a heap laid out unluckily) would otherwise bias one side of every
//! pair, and starting is cheap next to the run (milliseconds). Every trial's replies are
//! verified, and each server must exit cleanly on SIGTERM; a trial that fails either makes
//! the comparison fail (exit 3) rather than quietly drop a data point.
//!
//! p99 latency is compared the same way, with its own threshold (`--p99-threshold`), since a
//! tail is far noisier than a mean rate.

use std::fmt::Write as _;
use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use clap::Args;
use echolab_protocol::units::{parse_duration, parse_size, parse_timeout};
use echolab_protocol::Protocol;
use serde::{Deserialize, Serialize};

use crate::config::{self, Op, Outputs, Progress, RunConfig};
use crate::lab::launch::{
    describe_placement, find_bin_dir, pin_halves, standard_models, Model, Server,
};
use crate::run;
use crate::stats::median;

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

    /// Wire protocol the servers speak.
    #[arg(long, default_value = "binary", value_parser = config::parse_protocol)]
    pub protocol: Protocol,

    /// Connections per trial.
    #[arg(short, long, default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub connections: u32,

    /// loadgen threads per trial.
    #[arg(short, long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub threads: u32,

    /// Measured time per trial. Short, so that the two trials of a pair run within a fraction
    /// of a second of each other, where a shared machine's drift is still the same for both.
    #[arg(short, long, default_value = "100ms", value_parser = parse_duration)]
    pub duration: Duration,

    /// Unrecorded lead-in per trial (connections opened, first requests answered).
    #[arg(long, default_value = "50ms", value_parser = parse_duration)]
    pub warmup: Duration,

    /// Payload bytes per request.
    #[arg(long, default_value = "64", value_parser = parse_size)]
    pub payload: usize,

    /// What each request asks: echo, ping, sleep:US, spin:US.
    #[arg(long, default_value = "echo", value_parser = config::parse_op)]
    pub op: Op,

    /// Requests in flight per connection.
    #[arg(short, long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=65_536))]
    pub pipeline: u32,

    /// Short connections: this many requests per connection, then reconnect.
    #[arg(long, value_name = "K", value_parser = clap::value_parser!(u64).range(1..))]
    pub requests_per_conn: Option<u64>,

    /// Per-request limit inside a trial.
    #[arg(long, default_value = "1s", value_parser = parse_timeout)]
    pub timeout: Duration,

    /// How the two trials of a pair share the machine: side-by-side (both servers at once, on
    /// the same CPUs, each driven by its own loadgen run over the same window) or alternate
    /// (one after the other).
    #[arg(long, value_enum, default_value_t = Mode::Alternate)]
    pub mode: Mode,

    /// Pairs of trials (one baseline and one candidate each) per server, at least. At least 8:
    /// the bootstrap interval of a handful of pairs is too narrow to trust.
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u32).range(8..=10_000))]
    pub pairs: u32,

    /// Pairs per server at most: past --pairs, a server whose interval is still wider than
    /// ±--precision gets more pairs, up to this many (or until --time-limit).
    #[arg(long, default_value_t = 150, value_parser = clap::value_parser!(u32).range(8..=10_000))]
    pub max_pairs: u32,

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

fn parse_confidence(s: &str) -> Result<f64, String> {
    let v = parse_percent(s)?;
    if !(0.5..1.0).contains(&v) {
        return Err(format!("'{s}': a confidence level from 50 to below 100"));
    }
    Ok(v)
}

// ----- statistics ------------------------------------------------------------------------

/// A ratio, candidate over baseline, with its confidence interval.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Estimate {
    /// The trimmed geometric mean of the pair ratios.
    pub ratio: f64,
    /// Lower end of the interval.
    pub low: f64,
    /// Upper end.
    pub high: f64,
}

/// The share of pairs dropped at each end before averaging.
pub const TRIM: f64 = 0.2;

/// The mean of `logs` after dropping `TRIM` of them at each end. Sorts `logs`.
fn trimmed_mean(logs: &mut [f64]) -> f64 {
    logs.sort_by(|a, b| a.total_cmp(b));
    let cut = (logs.len() as f64 * TRIM).floor() as usize;
    let kept = &logs[cut..logs.len() - cut];
    kept.iter().sum::<f64>() / kept.len() as f64
}

/// splitmix64: a tiny, well-studied generator. Written out (eight lines) rather than taken
/// from a crate so that a recorded comparison's interval can be recomputed exactly, whatever
/// a dependency's next version does to its streams.
#[derive(Debug)]
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in 0..n (n small: the modulo bias is below 2^-50).
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// The candidate/baseline ratio of paired measurements, with a percentile-bootstrap interval
/// at `confidence` over `resamples` resamplings of the pairs. `base` and `cand` are the two
/// sides of each pair, in pair order; values must be positive.
pub fn paired_ratio(
    base: &[f64],
    cand: &[f64],
    confidence: f64,
    resamples: u32,
    seed: u64,
) -> Option<Estimate> {
    let logs: Vec<f64> = base
        .iter()
        .zip(cand)
        .filter(|(b, c)| **b > 0.0 && **c > 0.0 && b.is_finite() && c.is_finite())
        .map(|(b, c)| (c / b).ln())
        .collect();
    if logs.is_empty() {
        return None;
    }
    let ratio = trimmed_mean(&mut logs.clone()).exp();
    let mut rng = SplitMix64(seed);
    let mut sample = vec![0.0; logs.len()];
    let mut means: Vec<f64> = (0..resamples.max(1))
        .map(|_| {
            for s in sample.iter_mut() {
                *s = logs[rng.below(logs.len())];
            }
            trimmed_mean(&mut sample)
        })
        .collect();
    means.sort_by(|a, b| a.total_cmp(b));
    let tail = (1.0 - confidence) / 2.0;
    let at = |q: f64| {
        let i = (q * (means.len() - 1) as f64).round() as usize;
        means[i.min(means.len() - 1)].exp()
    };
    Some(Estimate {
        ratio,
        low: at(tail),
        high: at(1.0 - tail),
    })
}

/// What a comparison concludes about one figure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// Worse beyond the threshold, and the interval excludes no change.
    Regression,
    /// Better beyond the threshold, and the interval excludes no change.
    Improvement,
    /// Anything else: within the threshold, or not distinguishable from noise.
    NoSignificantChange,
    /// The interval never got as narrow as `--precision` in the pairs and time allowed, and it
    /// reaches below `1 - threshold`: a regression beyond the threshold can be neither shown
    /// nor ruled out. The machine was too noisy; run the gate again.
    Inconclusive,
}

impl std::fmt::Display for Verdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Verdict::Regression => "REGRESSION",
            Verdict::Improvement => "improvement",
            Verdict::NoSignificantChange => "no significant change",
            Verdict::Inconclusive => "INCONCLUSIVE",
        })
    }
}

/// The verdict on `e` with `threshold` (a fraction), for a figure where a higher ratio is
/// better (throughput) or worse (latency).
pub fn verdict(e: &Estimate, threshold: f64, higher_is_better: bool) -> Verdict {
    let worse = if higher_is_better {
        e.ratio < 1.0 - threshold && e.high < 1.0
    } else {
        e.ratio > 1.0 + threshold && e.low > 1.0
    };
    let better = if higher_is_better {
        e.ratio > 1.0 + threshold && e.low > 1.0
    } else {
        e.ratio < 1.0 - threshold && e.high < 1.0
    };
    match (worse, better) {
        (true, _) => Verdict::Regression,
        (_, true) => Verdict::Improvement,
        _ => Verdict::NoSignificantChange,
    }
}

// ----- the comparison --------------------------------------------------------------------

/// One trial: one fresh server, one loadgen run.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Trial {
    /// Verified replies per second.
    pub throughput_rps: f64,
    /// Latency percentiles, µs.
    pub p50_us: u64,
    /// 99th percentile, µs.
    pub p99_us: u64,
    /// The server's CPU per verified request, µs, when /proc could be read.
    pub server_cpu_us_per_req: Option<f64>,
}

/// Both sides of one pair.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Pair {
    /// Whether the baseline ran first.
    pub baseline_first: bool,
    /// The baseline's trial.
    pub baseline: Trial,
    /// The candidate's trial.
    pub candidate: Trial,
}

/// The comparison of one server (model).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ModelComparison {
    /// The model's name.
    pub name: String,
    /// The command lines (servers are started afresh per trial).
    pub baseline_command: String,
    /// The candidate's.
    pub candidate_command: String,
    /// Median baseline throughput over its trials, req/s.
    pub baseline_rps: f64,
    /// Median candidate throughput, req/s.
    pub candidate_rps: f64,
    /// Throughput, candidate / baseline.
    pub throughput: Option<Estimate>,
    /// The throughput verdict.
    pub throughput_verdict: Option<Verdict>,
    /// Median baseline p99, µs.
    pub baseline_p99_us: f64,
    /// Median candidate p99, µs.
    pub candidate_p99_us: f64,
    /// p99, candidate / baseline.
    pub p99: Option<Estimate>,
    /// The p99 verdict (none when --p99-threshold off).
    pub p99_verdict: Option<Verdict>,
    /// Why the comparison could not be made, if it could not.
    pub failure: Option<String>,
    /// Why this model was left out, if it was.
    #[serde(default)]
    pub skipped: Option<String>,
    /// Pairs run again because a trial measured nothing (no reply, no error).
    #[serde(default)]
    pub retried_pairs: u32,
    /// It stopped getting pairs because its interval was within ±precision.
    #[serde(default)]
    pub precise: bool,
    /// Every pair, in run order.
    pub pairs: Vec<Pair>,
}

impl ModelComparison {
    /// Whether either gated figure regressed.
    pub fn regressed(&self) -> bool {
        self.throughput_verdict == Some(Verdict::Regression)
            || self.p99_verdict == Some(Verdict::Regression)
    }
}

/// What was compared and how.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CompareParams {
    /// The baseline's label.
    pub baseline_label: String,
    /// The candidate's label.
    pub candidate_label: String,
    /// The workload, in words.
    pub workload: String,
    /// Pairs per model, at least.
    pub pairs: u32,
    /// Pairs per model, at most.
    #[serde(default)]
    pub max_pairs: u32,
    /// The interval half-width at which a model stops getting pairs.
    #[serde(default)]
    pub precision: f64,
    /// No pair starts past this many seconds (beyond the minimum).
    #[serde(default)]
    pub time_limit_s: f64,
    /// How the trials of a pair share the machine.
    #[serde(default = "default_mode")]
    pub mode: Mode,
    /// Measured seconds per trial.
    pub duration_s: f64,
    /// Warmup seconds per trial.
    pub warmup_s: f64,
    /// Throughput threshold (fraction).
    pub threshold: f64,
    /// p99 threshold (fraction), if gated.
    pub p99_threshold: Option<f64>,
    /// Confidence level of the intervals.
    pub confidence: f64,
    /// Bootstrap resamples.
    pub resamples: u32,
    /// Bootstrap seed.
    pub seed: u64,
    /// Where servers and loadgen ran.
    pub placement: String,
}

fn default_mode() -> Mode {
    Mode::Alternate
}

/// A whole `loadgen compare`: what the JSON and the history hold.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CompareReport {
    /// When it finished (UTC).
    pub time: String,
    /// `loadgen <version>`.
    pub tool: String,
    /// The parameters.
    pub params: CompareParams,
    /// The machine.
    pub machine: serde_json::Value,
    /// One entry per model.
    pub models: Vec<ModelComparison>,
    /// Wall time of the whole comparison, seconds.
    pub elapsed_s: f64,
    /// Cut short by Ctrl-C.
    pub interrupted: bool,
    /// A file (`--json`, `--markdown`, `--history`) that could not be written.
    #[serde(skip)]
    pub write_error: Option<String>,
}

impl CompareReport {
    /// 0 no regression; 1 a regression; 3 a comparison that could not be made (and no
    /// regression elsewhere); 4 inconclusive (too noisy to decide, and nothing else wrong);
    /// 130 interrupted.
    pub fn exit_code(&self) -> u8 {
        if self.interrupted {
            130
        } else if self.models.iter().any(ModelComparison::regressed) {
            1
        } else if self.models.iter().any(|m| m.failure.is_some()) {
            3
        } else if self
            .models
            .iter()
            .any(|m| m.throughput_verdict == Some(Verdict::Inconclusive))
        {
            4
        } else {
            0
        }
    }
}

/// One server to compare: its two builds (or flag sets).
#[derive(Debug)]
struct Side {
    baseline: Model,
    candidate: Model,
    /// Why it is left out of the gate, if it is.
    skipped: Option<String>,
    /// Its connections may wait for a worker by the model's nature (see [`REUSEPORT_SKIP`]):
    /// replies that never came because of that are not errors of the build.
    tolerate_waiting: bool,
}

impl Side {
    /// The empty comparison this side will fill.
    fn start(&self) -> ModelComparison {
        ModelComparison {
            name: self.baseline.name.clone(),
            baseline_command: crate::lab::launch::display_command(&self.baseline),
            candidate_command: crate::lab::launch::display_command(&self.candidate),
            baseline_rps: 0.0,
            candidate_rps: 0.0,
            throughput: None,
            throughput_verdict: None,
            baseline_p99_us: 0.0,
            candidate_p99_us: 0.0,
            p99: None,
            p99_verdict: None,
            failure: None,
            skipped: self.skipped.clone(),
            retried_pairs: 0,
            precise: false,
            pairs: Vec::new(),
        }
    }
}

/// Why `prefork-reuseport` is not gated unless asked for by name.
pub const REUSEPORT_SKIP: &str = "not gated unless named in --only: SO_REUSEPORT hashes each \
connection to one worker, and a connection hashed to a busy worker waits for the whole trial, so \
its throughput is decided by the port hash rather than the code; its request path is \
prefork-shared's";

/// The servers to compare.
fn sides(args: &CompareArgs) -> Result<Vec<Side>, String> {
    let mut out = Vec::new();
    match (&args.baseline, &args.candidate) {
        (Some(b), Some(c)) => {
            if args.name.is_empty() {
                return Err("--name must not be empty".into());
            }
            out.push((
                Model::command(&args.name, b, args.protocol),
                Model::command(&args.name, c, args.protocol),
            ));
        }
        _ => {
            let (Some(bd), Some(cd)) = (&args.baseline_bin_dir, &args.candidate_bin_dir) else {
                return Err(
                    "give --baseline and --candidate, or --baseline-bin-dir and --candidate-bin-dir"
                        .into(),
                );
            };
            if args.protocol != Protocol::Binary {
                return Err(
                    "--protocol: the bin-dir mode drives echolab's servers in binary".into(),
                );
            }
            let bd = find_bin_dir(Some(bd)).map_err(|e| format!("--baseline-bin-dir: {e}"))?;
            let cd = find_bin_dir(Some(cd)).map_err(|e| format!("--candidate-bin-dir: {e}"))?;
            // Only echolab's own models: redis-server would compare a build with itself.
            let ours = |dir: &Path| -> Vec<Model> {
                standard_models(dir, args.workers)
                    .into_iter()
                    .filter(|m| m.echolab)
                    .collect()
            };
            let (base, cand) = (ours(&bd), ours(&cd));
            if let Some(only) = &args.only {
                if let Some(bad) = only.iter().find(|n| !base.iter().any(|m| &m.name == *n)) {
                    let names: Vec<&str> = base.iter().map(|m| m.name.as_str()).collect();
                    return Err(format!(
                        "--only {bad}: no such model (known: {})",
                        names.join(", ")
                    ));
                }
            }
            let wanted = |m: &Model| args.only.as_ref().is_none_or(|o| o.contains(&m.name));
            out.extend(base.into_iter().zip(cand).filter(|(b, _)| wanted(b)));
        }
    }
    let mut per_model = Vec::new();
    for spec in &args.candidate_args_for {
        let (name, extra) = spec
            .split_once('=')
            .ok_or_else(|| format!("--candidate-args-for {spec}: expected MODEL=ARGS"))?;
        if !out.iter().any(|(b, _)| b.name == name) {
            return Err(format!(
                "--candidate-args-for {name}: not one of the servers compared"
            ));
        }
        per_model.push((name.to_string(), extra.to_string()));
    }
    let named = |n: &str| args.only.as_ref().is_some_and(|o| o.iter().any(|x| x == n));
    Ok(out
        .into_iter()
        .map(|(b, c)| {
            let b = b.with_extra_args(&args.baseline_args);
            let mut c = c.with_extra_args(&args.candidate_args);
            for (name, extra) in &per_model {
                if *name == c.name {
                    c = c.with_extra_args(extra);
                }
            }
            let reuseport = b.echolab && b.name == "prefork-reuseport";
            Side {
                skipped: (reuseport && !named(&b.name)).then(|| REUSEPORT_SKIP.to_string()),
                tolerate_waiting: reuseport,
                baseline: b,
                candidate: c,
            }
        })
        .collect())
}

fn workload_words(args: &CompareArgs) -> String {
    let conns = match args.requests_per_conn {
        Some(k) => format!(
            "{} connection slots, {k} request(s) per connection",
            args.connections
        ),
        None => format!("{} connections", args.connections),
    };
    format!(
        "{} {} {} B, {conns}, pipeline {}, closed loop; {:?} measured after {:?} warmup per trial",
        args.protocol, args.op, args.payload, args.pipeline, args.duration, args.warmup
    )
}

/// Runs the comparison; returns the report (also written where asked) or why it could not
/// start at all.
pub fn compare(args: &CompareArgs) -> Result<CompareReport, String> {
    let started = Instant::now();
    let sides = sides(args)?;
    // Check the workload flags once, before any server starts.
    run_args(args, "127.0.0.1:1".parse().map_err(|_| "address")?, 0)
        .checked()
        .map_err(|e| format!("the workload: {e}"))?;
    let placement = if args.no_pin { None } else { pin_halves() };
    let interrupted = || run::INTERRUPTED.load(Ordering::Relaxed);
    let mut models: Vec<ModelComparison> = sides.iter().map(|s| s.start()).collect();
    let precision = args.precision.unwrap_or(args.threshold / 2.0);
    // Pair 1 of every model, then pair 2 of every model, ...: a noisy minute on the machine
    // is shared by all models instead of falling on one of them. Past --pairs, only the models
    // whose interval is still wider than ±precision go on, while time is left.
    'pairs: for i in 0..args.max_pairs.max(args.pairs) {
        let past_minimum = i >= args.pairs;
        if past_minimum && started.elapsed() >= args.time_limit {
            break;
        }
        let mut any = false;
        for (side, m) in sides.iter().zip(models.iter_mut()) {
            if interrupted() {
                break 'pairs;
            }
            if m.failure.is_some() || m.skipped.is_some() {
                continue;
            }
            if m.precise || (past_minimum && precise_enough(args, m, precision)) {
                m.precise = true;
                continue;
            }
            any = true;
            run_pair(args, side, m, i, placement.as_ref());
        }
        if !any {
            break;
        }
    }
    let cut_short = interrupted();
    let models = models
        .into_iter()
        .map(|m| summarise(args, m, cut_short))
        .collect();
    let report = CompareReport {
        time: crate::clock::utc_timestamp(),
        tool: format!("loadgen {}", env!("CARGO_PKG_VERSION")),
        params: CompareParams {
            baseline_label: args.baseline_label.clone(),
            candidate_label: args.candidate_label.clone(),
            workload: workload_words(args),
            pairs: args.pairs,
            max_pairs: args.max_pairs.max(args.pairs),
            precision: args.precision.unwrap_or(args.threshold / 2.0),
            time_limit_s: args.time_limit.as_secs_f64(),
            mode: args.mode,
            duration_s: args.duration.as_secs_f64(),
            warmup_s: args.warmup.as_secs_f64(),
            threshold: args.threshold,
            p99_threshold: args.p99_threshold.0,
            confidence: args.confidence,
            resamples: args.resamples,
            seed: args.seed,
            placement: describe_placement(placement.as_ref()),
        },
        machine: serde_json::to_value(crate::proc::machine_info())
            .unwrap_or(serde_json::Value::Null),
        models,
        elapsed_s: started.elapsed().as_secs_f64(),
        interrupted: cut_short,
        write_error: None,
    };
    // Minutes of trials are not thrown away because a file could not be written: the
    // verdict stands, and the error is reported beside it.
    let mut report = report;
    report.write_error = write_outputs(args, &report).err();
    Ok(report)
}

fn write_outputs(args: &CompareArgs, report: &CompareReport) -> Result<(), String> {
    if let Some(path) = &args.json {
        let text = serde_json::to_string_pretty(report).map_err(|e| e.to_string())?;
        fs::write(path, text + "\n")
            .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    }
    if let Some(path) = &args.markdown {
        fs::write(path, markdown(report))
            .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    }
    if let Some(path) = &args.history {
        if report.interrupted {
            eprintln!(
                "loadgen compare: interrupted, so not appended to {}",
                path.display()
            );
        } else {
            let line = serde_json::to_string(&history_entry(report)).map_err(|e| e.to_string())?;
            let mut f = fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .map_err(|e| format!("cannot open {}: {e}", path.display()))?;
            writeln!(f, "{line}").map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        }
    }
    Ok(())
}

/// A history line: the report without its trials (they are in `--json`).
fn history_entry(report: &CompareReport) -> CompareReport {
    let mut entry = report.clone();
    for m in &mut entry.models {
        m.pairs.clear();
    }
    entry
}

fn run_args(args: &CompareArgs, addr: std::net::SocketAddr, pid: i32) -> RunConfig {
    RunConfig {
        addr,
        protocol: args.protocol,
        connections: args.connections,
        threads: args.threads,
        duration: Some(args.duration),
        warmup: args.warmup,
        payload: args.payload,
        op: args.op,
        pipeline: args.pipeline,
        requests_per_conn: args.requests_per_conn,
        timeout: args.timeout,
        server_pid: (pid > 0).then_some(pid),
        outputs: Outputs {
            progress: Progress::Never,
            ..Outputs::default()
        },
        ..RunConfig::default()
    }
}

/// Why a trial gave no figure.
#[derive(Debug)]
enum TrialError {
    /// Nothing went wrong and nothing was measured: no reply verified, no error, nothing lost
    /// (on a machine busy enough, the whole window can pass before the first reply). The
    /// pair is run again.
    Unmeasured,
    /// Something went wrong: the comparison of this model fails, saying this.
    Failed(String),
}

impl From<String> for TrialError {
    fn from(s: String) -> Self {
        TrialError::Failed(s)
    }
}

/// How many times a pair is run again when one of its trials measured nothing.
const UNMEASURED_RETRIES: u32 = 3;

/// One trial: start `model` afresh, drive it, stop it, check it.
fn trial(
    args: &CompareArgs,
    model: &Model,
    tolerate_waiting: bool,
    cpus: Option<&nix::sched::CpuSet>,
) -> Result<Trial, TrialError> {
    let server = Server::start(model, None, cpus).map_err(|e| format!("did not start: {e}"))?;
    let report = run::run(&run_args(args, server.addr, server.pid())).map_err(|e| e.to_string());
    judge(server, report, tolerate_waiting)
}

/// Two trials at once, one per model, each server started afresh and driven by its own
/// loadgen run over the same window (`--mode side-by-side`). `first` says which to start
/// first; the results come back in the order of `models`.
fn trials_side_by_side(
    args: &CompareArgs,
    models: [&Model; 2],
    first: usize,
    tolerate_waiting: bool,
    cpus: Option<&nix::sched::CpuSet>,
) -> [Result<Trial, TrialError>; 2] {
    let start = |m: &Model| Server::start(m, None, cpus).map_err(|e| format!("did not start: {e}"));
    let (a, b) = (first, 1 - first);
    let started_a = start(models[a]);
    // The second is started only if the first did; a side never started is no one's failure.
    let started_b = started_a.is_ok().then(|| start(models[b]));
    let (sa, sb) = match (started_a, started_b) {
        (Ok(sa), Some(Ok(sb))) => (sa, sb),
        (ra, rb) => {
            // Whichever did start is stopped (its Drop kills it if stop does not); a side that
            // started and stopped cleanly measured nothing, so the pair runs again unless the
            // other side failed.
            let settle = |r: Result<Server, String>| match r {
                Ok(s) => match s.stop() {
                    Ok(()) => Err(TrialError::Unmeasured),
                    Err(e) => Err(TrialError::Failed(e)),
                },
                Err(e) => Err(TrialError::Failed(e)),
            };
            let mut out = [Err(TrialError::Unmeasured), Err(TrialError::Unmeasured)];
            out[a] = settle(ra);
            out[b] = rb.map_or(Err(TrialError::Unmeasured), settle);
            return out;
        }
    };
    let (ra, rb) = std::thread::scope(|s| {
        let ha =
            s.spawn(|| run::run(&run_args(args, sa.addr, sa.pid())).map_err(|e| e.to_string()));
        let rb = run::run(&run_args(args, sb.addr, sb.pid())).map_err(|e| e.to_string());
        let ra = ha
            .join()
            .unwrap_or_else(|_| Err("the loadgen thread panicked".to_string()));
        (ra, rb)
    });
    let mut out = [Err(TrialError::Unmeasured), Err(TrialError::Unmeasured)];
    out[a] = judge(sa, ra, tolerate_waiting);
    out[b] = judge(sb, rb, tolerate_waiting);
    out
}

/// Stops `server` and turns its run's `report` into a trial, or says why it is none.
fn judge(
    mut server: Server,
    report: Result<crate::report::Report, String>,
    tolerate_waiting: bool,
) -> Result<Trial, TrialError> {
    let alive = server.alive();
    let exit = server.describe_exit();
    let stopped = server.stop();
    if !alive {
        return Err(TrialError::Failed(format!(
            "the server died during the trial ({exit})"
        )));
    }
    let report = report?;
    if report.interrupted {
        return Err(TrialError::Failed("interrupted".into()));
    }
    // Nothing counted and nothing to say (a worker thread that stopped leaves a note): the
    // window passed before the first reply.
    let untouched = report.counts.ok == 0
        && report.errors.total() == 0
        && report.counts.lost == 0
        && report.counts.failed == 0
        && !report.notes.iter().any(|n| n.starts_with("worker"));
    if untouched {
        stopped?;
        return Err(TrialError::Unmeasured);
    }
    let only_waited = report.errors.nonzero().all(|(k, _)| {
        matches!(
            k,
            crate::stats::ErrorKind::ReadTimeoutEmpty | crate::stats::ErrorKind::ConnectTimeout
        )
    });
    let acceptable = report.ok || (tolerate_waiting && only_waited && report.counts.ok > 0);
    if !acceptable {
        let kinds: Vec<String> = report
            .errors
            .nonzero()
            .map(|(k, n)| format!("{k} {n}"))
            .collect();
        return Err(TrialError::Failed(format!(
            "a trial had errors: {} verified replies, {} lost, {} failed; {}",
            report.counts.ok,
            report.counts.lost,
            report.counts.failed,
            if kinds.is_empty() {
                format!("no error kind; {}", report.notes.join("; "))
            } else {
                kinds.join(", ")
            }
        )));
    }
    stopped?;
    Ok(Trial {
        throughput_rps: report.throughput_rps,
        p50_us: report.latency_us.p50,
        p99_us: report.latency_us.p99,
        server_cpu_us_per_req: report.server.as_ref().map(|s| s.cpu_us_per_request),
    })
}

/// Runs pair `i` of one model and records it in `out`, or records why it failed. The baseline
/// goes first in even pairs (runs first, or in side-by-side mode is started first), the
/// candidate in odd ones, so neither side always has the head start.
fn run_pair(
    args: &CompareArgs,
    side: &Side,
    out: &mut ModelComparison,
    i: u32,
    cpus: Option<&nix::sched::CpuSet>,
) {
    let baseline_first = i % 2 == 0;
    let names = ["baseline", "candidate"];
    let models = [&side.baseline, &side.candidate];
    let first = if baseline_first { 0 } else { 1 };
    let mut attempt = 0;
    let (b, c) = loop {
        let results: [Result<Trial, TrialError>; 2] = match args.mode {
            Mode::SideBySide => {
                trials_side_by_side(args, models, first, side.tolerate_waiting, cpus)
            }
            Mode::Alternate => {
                // One after the other; a failure of the first skips the second.
                let mut results = [Err(TrialError::Unmeasured), Err(TrialError::Unmeasured)];
                let go = trial(args, models[first], side.tolerate_waiting, cpus);
                let ok = go.is_ok();
                results[first] = go;
                if ok {
                    results[1 - first] =
                        trial(args, models[1 - first], side.tolerate_waiting, cpus);
                }
                results
            }
        };
        let [rb, rc] = results;
        let failure = [&rb, &rc]
            .into_iter()
            .zip(names)
            .find_map(|(r, which)| match r {
                Err(TrialError::Failed(why)) => Some(format!("{which}, pair {}: {why}", i + 1)),
                _ => None,
            });
        if let Some(f) = failure {
            eprintln!("loadgen compare: {}: {f}", out.name);
            out.failure = Some(f);
            return;
        }
        match (rb, rc) {
            (Ok(b), Ok(c)) => break (b, c),
            _ if attempt < UNMEASURED_RETRIES => {
                // Both sides again, so the pair stays two trials a moment apart.
                attempt += 1;
                out.retried_pairs += 1;
                eprintln!(
                    "loadgen compare: {}: pair {}: a trial had no reply within the window; running the pair again",
                    out.name,
                    i + 1
                );
            }
            _ => {
                let f = format!(
                    "pair {}: no reply was verified within the {:?} window, {} times",
                    i + 1,
                    args.duration,
                    UNMEASURED_RETRIES + 1
                );
                eprintln!("loadgen compare: {}: {f}", out.name);
                out.failure = Some(f);
                return;
            }
        }
    };
    eprintln!(
        "[{}] pair {} ({}..{}): baseline {:.0} req/s, candidate {:.0} req/s (x{:.3}); p99 {} / {} µs",
        out.name,
        i + 1,
        args.pairs,
        args.max_pairs.max(args.pairs),
        b.throughput_rps,
        c.throughput_rps,
        c.throughput_rps / b.throughput_rps.max(1e-9),
        b.p99_us,
        c.p99_us
    );
    out.pairs.push(Pair {
        baseline_first,
        baseline: b,
        candidate: c,
    });
}

/// The throughput verdict: [`verdict`], except that an interval still wider than
/// ±`precision` (the pairs or the time ran out) that reaches below `1 - threshold` is
/// [`Verdict::Inconclusive`]: it can neither show nor rule out a regression that matters.
pub fn throughput_verdict(e: &Estimate, threshold: f64, precision: f64) -> Verdict {
    let v = verdict(e, threshold, true);
    if v == Verdict::NoSignificantChange && half_width(e) > precision && e.low < 1.0 - threshold {
        Verdict::Inconclusive
    } else {
        v
    }
}

/// Whether `m`'s throughput interval is already within ±`precision` (a quicker bootstrap
/// than the final one: it only decides whether to go on).
fn precise_enough(args: &CompareArgs, m: &ModelComparison, precision: f64) -> bool {
    let b: Vec<f64> = m.pairs.iter().map(|p| p.baseline.throughput_rps).collect();
    let c: Vec<f64> = m.pairs.iter().map(|p| p.candidate.throughput_rps).collect();
    paired_ratio(
        &b,
        &c,
        args.confidence,
        2000,
        model_seed(args.seed, &m.name),
    )
    .is_some_and(|e| half_width(&e) <= precision)
}

/// `--seed` mixed with the model's name: the models' pairs ran minute by minute together, and
/// one stream of resampling for all of them would make their intervals err together.
fn model_seed(seed: u64, name: &str) -> u64 {
    name.bytes().fold(seed, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Half the width of `e`'s interval, as a fraction of the ratio 1.
fn half_width(e: &Estimate) -> f64 {
    (e.high - e.low) / 2.0
}

/// The medians, estimates and verdicts of `m`'s pairs. A comparison cut short by Ctrl-C gets
/// estimates (for the models not caught mid-pair, which are marked failed) but no verdict: it
/// has fewer pairs than asked for (perhaps one, whose interval has no width), so a verdict
/// would claim what the pairs cannot show.
fn summarise(args: &CompareArgs, mut m: ModelComparison, interrupted: bool) -> ModelComparison {
    let side = |f: &dyn Fn(&Pair) -> f64| m.pairs.iter().map(f).collect::<Vec<f64>>();
    let (b_rps, c_rps) = (
        side(&|p| p.baseline.throughput_rps),
        side(&|p| p.candidate.throughput_rps),
    );
    let (b_p99, c_p99) = (
        side(&|p| p.baseline.p99_us as f64),
        side(&|p| p.candidate.p99_us as f64),
    );
    m.baseline_rps = median(b_rps.clone());
    m.candidate_rps = median(c_rps.clone());
    m.baseline_p99_us = median(b_p99.clone());
    m.candidate_p99_us = median(c_p99.clone());
    if m.failure.is_some() || m.skipped.is_some() || m.pairs.is_empty() {
        return m;
    }
    let seed = model_seed(args.seed, &m.name);
    m.throughput = paired_ratio(&b_rps, &c_rps, args.confidence, args.resamples, seed);
    let precision = args.precision.unwrap_or(args.threshold / 2.0);
    // A model the loop stopped for being precise is judged as precise: the final interval,
    // from more resamples, may come out a hair wider at the boundary.
    let precision = if m.precise { f64::INFINITY } else { precision };
    m.throughput_verdict = m
        .throughput
        .map(|e| throughput_verdict(&e, args.threshold, precision));
    // A different seed for the second interval, so the two are not drawn from one stream.
    m.p99 = paired_ratio(&b_p99, &c_p99, args.confidence, args.resamples, seed ^ 0x99);
    m.p99_verdict = args
        .p99_threshold
        .0
        .and_then(|t| m.p99.map(|e| verdict(&e, t, false)));
    if interrupted {
        m.throughput_verdict = None;
        m.p99_verdict = None;
    }
    m
}

// ----- the table -------------------------------------------------------------------------

fn pct(v: f64) -> String {
    format!("{:+.1}%", (v - 1.0) * 100.0)
}

fn interval(e: &Estimate) -> String {
    format!("[{:.3}, {:.3}]", e.low, e.high)
}

/// The rows of the table: model, baseline req/s, candidate req/s, ratio, interval, verdict,
/// and the same for p99.
fn rows(report: &CompareReport) -> Vec<[String; 11]> {
    report
        .models
        .iter()
        .map(|m| {
            let (ratio, iv, verdict) = match (&m.throughput, &m.failure) {
                (Some(e), None) => (
                    format!("{:.3} ({})", e.ratio, pct(e.ratio)),
                    interval(e),
                    m.throughput_verdict.map_or("–".into(), |v| v.to_string()),
                ),
                (_, Some(_)) => ("–".into(), "–".into(), "FAILED (below)".into()),
                _ if m.skipped.is_some() => ("–".into(), "–".into(), "skipped (below)".into()),
                _ => ("–".into(), "–".into(), "–".into()),
            };
            let (p99, p99_iv, p99_verdict) = match (&m.p99, &m.failure) {
                (Some(e), None) => (
                    format!("{:.3}", e.ratio),
                    interval(e),
                    m.p99_verdict.map_or("not gated".into(), |v| v.to_string()),
                ),
                _ => ("–".into(), "–".into(), "–".into()),
            };
            let rate = |v: f64| match m.pairs.is_empty() {
                true => "–".to_string(),
                false => format!("{v:.0}"),
            };
            let p99_us = match m.pairs.is_empty() {
                true => "–".to_string(),
                false => format!("{:.0} → {:.0}", m.baseline_p99_us, m.candidate_p99_us),
            };
            [
                m.name.clone(),
                m.pairs.len().to_string(),
                rate(m.baseline_rps),
                rate(m.candidate_rps),
                ratio,
                iv,
                verdict,
                p99_us,
                p99,
                p99_iv,
                p99_verdict,
            ]
        })
        .collect()
}

const HEADER: [&str; 11] = [
    "model",
    "pairs",
    "baseline req/s",
    "candidate req/s",
    "ratio",
    "interval",
    "verdict",
    "p99 µs",
    "p99 ratio",
    "p99 interval",
    "p99 verdict",
];

fn headline(report: &CompareReport) -> String {
    let p = &report.params;
    let regressed: Vec<&str> = report
        .models
        .iter()
        .filter(|m| m.regressed())
        .map(|m| m.name.as_str())
        .collect();
    let failed: Vec<&str> = report
        .models
        .iter()
        .filter(|m| m.failure.is_some())
        .map(|m| m.name.as_str())
        .collect();
    let unsure: Vec<&str> = report
        .models
        .iter()
        .filter(|m| m.throughput_verdict == Some(Verdict::Inconclusive))
        .map(|m| m.name.as_str())
        .collect();
    let mut s = if !regressed.is_empty() {
        format!("REGRESSION in {}", regressed.join(", "))
    } else if report.interrupted {
        "interrupted: no verdict".into()
    } else if !failed.is_empty() {
        format!("could not compare {}", failed.join(", "))
    } else if !unsure.is_empty() {
        format!(
            "INCONCLUSIVE for {}: the machine was too noisy to rule out a regression beyond the threshold; run it again",
            unsure.join(", ")
        )
    } else {
        "no regression".into()
    };
    let _ = write!(
        s,
        " — {} vs {}; {}; {}–{} pairs per model (more while the interval is wider than ±{:.1}%, \
         for at most {:.0} s), {}, a fresh server per trial; \
         ratio = trimmed geometric mean of the pair ratios (candidate / baseline), {:.0}% bootstrap interval; \
         threshold {:.1}% throughput, {} p99",
        p.candidate_label,
        p.baseline_label,
        p.workload,
        p.pairs,
        p.max_pairs,
        p.precision * 100.0,
        p.time_limit_s,
        match p.mode {
            Mode::Alternate => "the two trials of a pair one after the other, order alternating",
            Mode::SideBySide => "the two trials of a pair side by side on the same CPUs",
        },
        p.confidence * 100.0,
        p.threshold * 100.0,
        p.p99_threshold
            .map_or("not gated on".into(), |t| format!("{:.0}%", t * 100.0)),
    );
    s
}

/// What the table cannot hold: why a model failed or was skipped.
fn notes(report: &CompareReport) -> Vec<String> {
    let mut out = Vec::new();
    for m in &report.models {
        if let Some(f) = &m.failure {
            out.push(format!("{} FAILED: {f}", m.name));
        }
        if let Some(why) = &m.skipped {
            out.push(format!("{} skipped: {why}", m.name));
        }
        if m.retried_pairs > 0 {
            out.push(format!(
                "{}: {} pair(s) run again after a trial that measured nothing (no reply and no error within the window)",
                m.name, m.retried_pairs
            ));
        }
    }
    out
}

/// The table for a terminal.
pub fn table(report: &CompareReport) -> String {
    let rows = rows(report);
    let mut widths = HEADER.map(|h| h.chars().count());
    for r in &rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let mut s = String::new();
    let line = |cells: &[String]| {
        let mut l = String::new();
        for (i, (c, w)) in cells.iter().zip(widths).enumerate() {
            let pad = w.saturating_sub(c.chars().count());
            // Numbers right-aligned, words left.
            if (1..=5).contains(&i) || (7..=9).contains(&i) {
                let _ = write!(l, "{}{c}  ", " ".repeat(pad));
            } else {
                let _ = write!(l, "{c}{}  ", " ".repeat(pad));
            }
        }
        l.trim_end().to_string() + "\n"
    };
    s.push_str(&line(&HEADER.map(String::from)));
    for r in &rows {
        s.push_str(&line(r));
    }
    for note in notes(report) {
        let _ = writeln!(s, "  {note}");
    }
    s.push_str(&headline(report));
    s.push('\n');
    s
}

/// The table as Markdown, for a pull-request comment.
pub fn markdown(report: &CompareReport) -> String {
    let mut s = String::from("### Throughput regression gate\n\n");
    let _ = writeln!(s, "{}\n", headline(report));
    let _ = writeln!(s, "| {} |", HEADER.join(" | "));
    let _ = writeln!(s, "|---|---:|---:|---:|---:|---:|---|---:|---:|---:|---|");
    for r in rows(report) {
        let cells: Vec<String> = r
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let c = c.replace('|', "\\|");
                if (i == 6 || i == 10) && (c == "REGRESSION" || c == "INCONCLUSIVE") {
                    format!("**{c}**")
                } else {
                    c
                }
            })
            .collect();
        let _ = writeln!(s, "| {} |", cells.join(" | "));
    }
    if !notes(report).is_empty() {
        s.push('\n');
    }
    for note in notes(report) {
        let _ = writeln!(s, "- {note}");
    }
    let _ = writeln!(
        s,
        "\nMachine: {}; {}. Wall time {:.0} s.",
        report
            .machine
            .get("cpu_model")
            .and_then(|v| v.as_str())
            .unwrap_or("unknown CPU"),
        report.params.placement,
        report.elapsed_s
    );
    s
}

/// Reads a history file (one [`CompareReport`] per line); lines that do not parse are
/// reported, not fatal.
pub fn read_history(path: &Path) -> Result<(Vec<CompareReport>, Vec<String>), String> {
    let text =
        fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let mut runs = Vec::new();
    let mut bad = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str::<CompareReport>(line) {
            Ok(r) => runs.push(r),
            Err(e) => bad.push(format!("{}:{}: {e}", path.display(), i + 1)),
        }
    }
    Ok((runs, bad))
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

/// Reads the history, writes the plot, and returns the table.
pub fn trend(args: &TrendArgs) -> Result<String, String> {
    let (runs, bad) = read_history(&args.history)?;
    let mut s = String::new();
    for b in &bad {
        let _ = writeln!(s, "skipped a line that is not a gate run: {b}");
    }
    if runs.is_empty() {
        return Err(format!("{}: no gate runs in it", args.history.display()));
    }
    let mut names: Vec<&str> = Vec::new();
    for r in &runs {
        for m in &r.models {
            if (m.throughput.is_some() || m.failure.is_some()) && !names.contains(&m.name.as_str())
            {
                names.push(&m.name);
            }
        }
    }
    let _ = writeln!(
        s,
        "throughput ratio (candidate / baseline) per gate run; ! = regression flagged, ~ = inconclusive, ? = failed"
    );
    let _ = write!(s, "{:>4}  {:<20}  {:<24}", "run", "time", "candidate");
    for n in &names {
        let _ = write!(s, "  {n:>17}");
    }
    s.push('\n');
    let skip = runs.len().saturating_sub(args.last as usize);
    for (i, r) in runs.iter().enumerate().skip(skip) {
        let label: String = r.params.candidate_label.chars().take(24).collect();
        let _ = write!(s, "{:>4}  {:<20}  {label:<24}", i + 1, r.time);
        for n in &names {
            let cell = match r.models.iter().find(|m| m.name == *n) {
                Some(m) if m.failure.is_some() => "?".to_string(),
                Some(m) => m.throughput.map_or("–".into(), |e| {
                    let mark = if m.regressed() {
                        "!"
                    } else if m.throughput_verdict == Some(Verdict::Inconclusive) {
                        "~"
                    } else {
                        " "
                    };
                    format!("{:.3}{mark}", e.ratio)
                }),
                None => "–".into(),
            };
            let _ = write!(s, "  {cell:>17}");
        }
        s.push('\n');
    }
    let svg_path = args
        .svg
        .clone()
        .unwrap_or_else(|| args.history.with_extension("svg"));
    match crate::lab::plot::trend(&runs) {
        Ok(Some(svg)) => {
            fs::write(&svg_path, svg)
                .map_err(|e| format!("cannot write {}: {e}", svg_path.display()))?;
            let _ = writeln!(s, "plot: {}", svg_path.display());
        }
        Ok(None) => {
            let _ = writeln!(s, "no plot: no run compared any model");
        }
        Err(e) => return Err(format!("drawing the plot: {e}")),
    }
    Ok(s)
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
        assert!(parse_confidence("40").is_err());
        assert_eq!(parse_confidence("95"), Ok(0.95));
    }

    #[test]
    fn trimmed_mean_drops_a_fifth_at_each_end() {
        // Ten values: two dropped at each end, the mean of the middle six.
        let mut xs = [100.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, -100.0, 7.0, 8.0];
        assert!((trimmed_mean(&mut xs) - 4.5).abs() < 1e-12);
        // Too few to trim: the plain mean.
        assert!((trimmed_mean(&mut [1.0, 2.0, 6.0]) - 3.0).abs() < 1e-12);
    }

    #[test]
    fn identical_sides_give_ratio_one_and_a_degenerate_interval() {
        let xs = [100.0, 120.0, 90.0, 130.0, 110.0];
        let e = paired_ratio(&xs, &xs, 0.95, 1000, 1).expect("estimate");
        assert_eq!((e.ratio, e.low, e.high), (1.0, 1.0, 1.0));
        assert_eq!(verdict(&e, 0.05, true), Verdict::NoSignificantChange);
    }

    #[test]
    fn drift_cancels_within_pairs() {
        // The machine drifts from 100k to 190k req/s; the candidate is 10% slower in every
        // pair. Unpaired, the two sides' ranges overlap completely; paired, it is exact.
        let base: Vec<f64> = (0..12)
            .map(|i| 100_000.0 + 8_000.0 * f64::from(i))
            .collect();
        let cand: Vec<f64> = base.iter().map(|b| b * 0.9).collect();
        let e = paired_ratio(&base, &cand, 0.95, 2000, 7).expect("estimate");
        assert!((e.ratio - 0.9).abs() < 1e-9, "{e:?}");
        assert_eq!(verdict(&e, 0.05, true), Verdict::Regression);
        // The same as latency (higher is worse): an improvement.
        assert_eq!(verdict(&e, 0.05, false), Verdict::Improvement);
    }

    #[test]
    fn one_wild_pair_does_not_decide() {
        // Eleven pairs within ±1%, one where the candidate's trial was hit by other work.
        let base = vec![100.0; 12];
        let mut cand = vec![
            99.0, 101.0, 100.5, 99.5, 100.0, 99.2, 100.8, 100.1, 99.9, 100.3, 99.7,
        ];
        cand.push(50.0);
        let e = paired_ratio(&base, &cand, 0.95, 5000, 3).expect("estimate");
        assert!((e.ratio - 1.0).abs() < 0.01, "{e:?}");
        assert_eq!(verdict(&e, 0.05, true), Verdict::NoSignificantChange);
    }

    #[test]
    fn verdict_needs_both_significance_and_size() {
        let e = |ratio, low, high| Estimate { ratio, low, high };
        // Certain but small: not a regression.
        assert_eq!(
            verdict(&e(0.98, 0.97, 0.99), 0.05, true),
            Verdict::NoSignificantChange
        );
        // Large but uncertain: not a regression.
        assert_eq!(
            verdict(&e(0.90, 0.80, 1.02), 0.05, true),
            Verdict::NoSignificantChange
        );
        // Large and certain.
        assert_eq!(
            verdict(&e(0.90, 0.86, 0.94), 0.05, true),
            Verdict::Regression
        );
        assert_eq!(
            verdict(&e(1.10, 1.06, 1.14), 0.05, true),
            Verdict::Improvement
        );
        // Latency: higher is worse.
        assert_eq!(
            verdict(&e(1.40, 1.20, 1.60), 0.25, false),
            Verdict::Regression
        );
        assert_eq!(
            verdict(&e(1.20, 1.10, 1.30), 0.25, false),
            Verdict::NoSignificantChange
        );
    }

    #[test]
    fn too_wide_an_interval_is_inconclusive_only_when_it_reaches_a_regression() {
        let e = |ratio, low, high| Estimate { ratio, low, high };
        // Wide, and a 5% regression cannot be ruled out: inconclusive.
        assert_eq!(
            throughput_verdict(&e(0.98, 0.90, 1.06), 0.05, 0.025),
            Verdict::Inconclusive
        );
        // Wide, but nowhere near a regression: no change.
        assert_eq!(
            throughput_verdict(&e(1.05, 0.99, 1.11), 0.05, 0.025),
            Verdict::NoSignificantChange
        );
        // Precise enough: the plain verdict stands.
        assert_eq!(
            throughput_verdict(&e(0.96, 0.94, 0.98), 0.05, 0.025),
            Verdict::NoSignificantChange
        );
        // Wide, yet clearly a regression: a regression.
        assert_eq!(
            throughput_verdict(&e(0.80, 0.70, 0.92), 0.05, 0.025),
            Verdict::Regression
        );
    }

    #[test]
    fn the_interval_covers_the_truth_under_noise() {
        // Pairs with 5% noise around a true ratio of 0.93: over 200 simulated comparisons the
        // 95% interval should contain 0.93 most of the time (the percentile bootstrap with 12
        // pairs undercovers a little; well above 80% is what it must manage).
        let mut rng = SplitMix64(42);
        let mut normal = || {
            // Box-Muller from two uniforms in (0, 1].
            let u = |r: &mut SplitMix64| ((r.next() >> 11) as f64 + 1.0) / (1u64 << 53) as f64;
            let (a, b) = (u(&mut rng), u(&mut rng));
            (-2.0 * a.ln()).sqrt() * (std::f64::consts::TAU * b).cos()
        };
        let mut covered = 0;
        for k in 0..200 {
            let base: Vec<f64> = (0..12).map(|_| 100.0 * (0.05 * normal()).exp()).collect();
            let cand: Vec<f64> = base
                .iter()
                .map(|b| b * 0.93 * (0.05 * normal()).exp())
                .collect();
            let e = paired_ratio(&base, &cand, 0.95, 2000, k).expect("estimate");
            if e.low <= 0.93 && 0.93 <= e.high {
                covered += 1;
            }
        }
        assert!(covered >= 160, "covered {covered} of 200");
    }

    #[test]
    fn exit_codes() {
        let model = |verdict, failure: Option<&str>| ModelComparison {
            name: "m".into(),
            baseline_command: String::new(),
            candidate_command: String::new(),
            baseline_rps: 0.0,
            candidate_rps: 0.0,
            throughput: None,
            throughput_verdict: verdict,
            baseline_p99_us: 0.0,
            candidate_p99_us: 0.0,
            p99: None,
            p99_verdict: None,
            failure: failure.map(String::from),
            skipped: None,
            retried_pairs: 0,
            precise: false,
            pairs: Vec::new(),
        };
        let report = |models| CompareReport {
            time: String::new(),
            tool: String::new(),
            params: CompareParams {
                baseline_label: "a".into(),
                candidate_label: "b".into(),
                workload: String::new(),
                pairs: 3,
                max_pairs: 3,
                precision: 0.025,
                time_limit_s: 60.0,
                mode: Mode::Alternate,
                duration_s: 0.0,
                warmup_s: 0.0,
                threshold: 0.05,
                p99_threshold: None,
                confidence: 0.95,
                resamples: 100,
                seed: 0,
                placement: String::new(),
            },
            machine: serde_json::Value::Null,
            models,
            elapsed_s: 0.0,
            interrupted: false,
            write_error: None,
        };
        let ok = model(Some(Verdict::NoSignificantChange), None);
        let slow = model(Some(Verdict::Regression), None);
        let broken = model(None, Some("did not start"));
        let unsure = model(Some(Verdict::Inconclusive), None);
        assert_eq!(report(vec![ok.clone(), unsure.clone()]).exit_code(), 4);
        assert_eq!(report(vec![unsure.clone(), broken.clone()]).exit_code(), 3);
        assert_eq!(report(vec![unsure, slow.clone()]).exit_code(), 1);
        assert_eq!(report(vec![ok.clone()]).exit_code(), 0);
        assert_eq!(report(vec![ok.clone(), slow.clone()]).exit_code(), 1);
        assert_eq!(report(vec![ok.clone(), broken.clone()]).exit_code(), 3);
        assert_eq!(report(vec![broken, slow]).exit_code(), 1);
        let r = report(vec![ok]);
        assert!(table(&r).contains("no regression"));
        assert!(markdown(&r).starts_with("### Throughput regression gate"));
    }
}
