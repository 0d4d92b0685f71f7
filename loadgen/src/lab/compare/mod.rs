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
//!
//! The gate is split by responsibility, and the files import one another one way only, so
//! each can be read (and tested) without the ones that use it: `flags` (the command line),
//! `stats` (the ratio, its interval, the verdict), `report` (the result as data), `trials`
//! (servers started, driven and judged), `output` (the table and the Markdown), `history` (the
//! files written, and the history read back) and `trend` (that history shown). This file
//! only puts them in order, in [`compare`], and re-exports what the command and the tests use.

mod flags;
mod history;
mod output;
mod report;
mod stats;
mod trend;
mod trials;

pub use flags::{parse_percent, CompareArgs, EarlyStop, Gate, Mode, TrendArgs};
pub use history::read_history;
pub use output::{markdown, table};
pub use report::{CompareParams, CompareReport, ModelComparison, Pair, Settled, Trial};
pub use stats::{paired_ratio, settled, throughput_verdict, verdict, Estimate, Verdict, TRIM};
pub use trend::trend;
pub use trials::REUSEPORT_SKIP;

use std::sync::atomic::Ordering;
use std::time::Instant;

use crate::lab::launch::{describe_placement, pin_halves, server_cpu_count};
use crate::run;
use history::write_outputs;
use trials::{precise_enough, run_args, run_pair, settled_now, sides, summarise};

fn workload_words(args: &CompareArgs) -> String {
    let conns = match args.load.requests_per_conn {
        Some(k) => format!(
            "{} connection slots, {k} request(s) per connection",
            args.load.connections
        ),
        None => format!("{} connections", args.load.connections),
    };
    format!(
        "{} {} {} B, {conns}, pipeline {}, closed loop; {:?} measured after {:?} warmup per trial",
        args.load.protocol,
        args.load.op,
        args.load.payload(),
        args.load.pipeline,
        args.duration,
        args.warmup
    )
}

/// Runs the comparison; returns the report (also written where asked) or why it could not
/// start at all.
pub fn compare(args: &CompareArgs) -> Result<CompareReport, String> {
    let started = Instant::now();
    // Pinned first, so that the loop-per-core models count the servers' CPUs.
    let placement = if args.no_pin { None } else { pin_halves() };
    let sides = sides(args, server_cpu_count(placement.as_ref()))?;
    // Check the workload flags once, before any server starts.
    run_args(args, "127.0.0.1:1".parse().map_err(|_| "address")?, 0)
        .checked()
        .map_err(|e| format!("the workload: {e}"))?;
    let interrupted = || run::INTERRUPTED.load(Ordering::Relaxed);
    let mut models: Vec<ModelComparison> = sides.iter().map(|s| s.start()).collect();
    let precision = args.precision.unwrap_or(args.threshold / 2.0);
    // Pair 1 of every model, then pair 2 of every model, ...: a noisy minute on the machine
    // is shared by all models instead of falling on one of them. A model stops getting pairs
    // once its verdicts are settled (from --early-stop's floor on: no pair it could plausibly
    // get would change them) or, past --pairs, once its interval is within ±precision; the
    // rest go on while time is left.
    let early_stop = args.early_stop.0;
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
            if m.precise || m.stopped_settled {
                continue;
            }
            if let Some(s) = settled_now(args, m) {
                m.settled.push(s);
                if early_stop.is_some_and(|floor| s.pairs >= floor) {
                    m.stopped_settled = true;
                    continue;
                }
            }
            if past_minimum && precise_enough(args, m, precision) {
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
    // Where the models that ran out of pairs or time ended, for the settled trace.
    for m in models.iter_mut().filter(|m| !m.stopped_settled) {
        if let Some(s) = settled_now(args, m) {
            if m.settled.last() != Some(&s) {
                m.settled.push(s);
            }
        }
    }
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
            early_stop,
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
