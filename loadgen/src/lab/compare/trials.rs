//! The trials: which servers are compared, one trial of a fresh server, a pair of trials in
//! either mode, and what a model's pairs add up to.
//!
//! This file is the gate's contact with the machine: it starts servers, drives them and decides
//! whether a trial counts. What the figures it gathers mean is [`super::stats`]'s arithmetic,
//! which [`summarise`] only applies.

use std::path::Path;

use echolab_protocol::Protocol;

use super::flags::{CompareArgs, Mode};
use super::report::{ModelComparison, Pair, Settled, Trial};
use super::stats::{
    half_width, model_seed, paired_ratio, settled, throughput_verdict, verdict, Estimate,
};
use crate::config::{Outputs, Progress, RunConfig};
use crate::lab::launch::{find_bin_dir, standard_models, takes_its_arguments, Model, Server};
use crate::run;
use crate::stats::median;

/// One server to compare: its two builds (or flag sets).
#[derive(Debug)]
pub(super) struct Side {
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
    pub(super) fn start(&self) -> ModelComparison {
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
            stopped_settled: false,
            settled: Vec::new(),
            pairs: Vec::new(),
        }
    }
}

/// Why `prefork-reuseport` is not gated unless asked for by name.
pub const REUSEPORT_SKIP: &str = "not gated unless named in --only: SO_REUSEPORT hashes each \
connection to one worker, and a connection hashed to a busy worker waits for the whole trial, so \
its throughput is decided by the port hash rather than the code; its request path is \
prefork-shared's";

/// The servers to compare; the loop-per-core models run `server_cpus` loops.
pub(super) fn sides(args: &CompareArgs, server_cpus: usize) -> Result<Vec<Side>, String> {
    let mut out = Vec::new();
    match (&args.baseline, &args.candidate) {
        (Some(b), Some(c)) => {
            if args.name.is_empty() {
                return Err("--name must not be empty".into());
            }
            out.push((
                Model::command(&args.name, b, args.load.protocol),
                Model::command(&args.name, c, args.load.protocol),
            ));
        }
        _ => {
            let (Some(bd), Some(cd)) = (&args.baseline_bin_dir, &args.candidate_bin_dir) else {
                return Err(
                    "give --baseline and --candidate, or --baseline-bin-dir and --candidate-bin-dir"
                        .into(),
                );
            };
            if args.load.protocol != Protocol::Binary {
                return Err(
                    "--protocol: the bin-dir mode drives echolab's servers in binary".into(),
                );
            }
            let bd = find_bin_dir(Some(bd)).map_err(|e| format!("--baseline-bin-dir: {e}"))?;
            let cd = find_bin_dir(Some(cd)).map_err(|e| format!("--candidate-bin-dir: {e}"))?;
            // Only echolab's own models: redis-server would compare a build with itself.
            let ours = |dir: &Path| -> Vec<Model> {
                standard_models(dir, args.workers, server_cpus)
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
            for (b, c) in base.into_iter().zip(cand).filter(|(b, _)| wanted(b)) {
                // A model newer than the baseline's build has nothing to be compared with:
                // said, and left out, rather than failed as a baseline that would not start.
                if !takes_its_arguments(&b) && takes_its_arguments(&c) {
                    eprintln!(
                        "{}: new in the candidate (the baseline's {} does not take its flags): \
                         not compared",
                        b.name,
                        b.argv.first().map_or("server", String::as_str)
                    );
                    continue;
                }
                out.push((b, c));
            }
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

pub(super) fn run_args(args: &CompareArgs, addr: std::net::SocketAddr, pid: i32) -> RunConfig {
    args.load.apply(RunConfig {
        addr,
        duration: Some(args.duration),
        warmup: args.warmup,
        timeout: args.timeout,
        server_pid: (pid > 0).then_some(pid),
        outputs: Outputs {
            progress: Progress::Never,
            ..Outputs::default()
        },
        ..RunConfig::default()
    })
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
        && report.counts.indeterminate == 0
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
            "a trial had errors: {} verified replies, {} failed, {} indeterminate; {}",
            report.counts.ok,
            report.counts.failed,
            report.counts.indeterminate,
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
pub(super) fn run_pair(
    args: &CompareArgs,
    side: &Side,
    out: &mut ModelComparison,
    i: u32,
    cpus: Option<&nix::sched::CpuSet>,
) {
    let started = std::time::Instant::now();
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
        seconds: started.elapsed().as_secs_f64(),
    });
}

/// The fewest pairs whose verdicts are checked for being settled: `--pairs`' own floor, below
/// which a bootstrap interval is too narrow to trust at all.
pub(super) const SETTLE_FLOOR: u32 = 8;

/// `m`'s throughput and p99 intervals from a quicker bootstrap than the final one (2 000
/// resamples): they only decide whether the model gets another pair.
fn quick_estimates(
    args: &CompareArgs,
    m: &ModelComparison,
) -> (Option<Estimate>, Option<Estimate>) {
    let side = |f: &dyn Fn(&Pair) -> f64| m.pairs.iter().map(f).collect::<Vec<f64>>();
    let seed = model_seed(args.seed, &m.name);
    let rps = paired_ratio(
        &side(&|p| p.baseline.throughput_rps),
        &side(&|p| p.candidate.throughput_rps),
        args.confidence,
        2000,
        seed,
    );
    let p99 = paired_ratio(
        &side(&|p| p.baseline.p99_us as f64),
        &side(&|p| p.candidate.p99_us as f64),
        args.confidence,
        2000,
        seed ^ 0x99,
    );
    (rps, p99)
}

/// Whether `m`'s throughput interval is already within ±`precision`.
pub(super) fn precise_enough(args: &CompareArgs, m: &ModelComparison, precision: f64) -> bool {
    quick_estimates(args, m)
        .0
        .is_some_and(|e| half_width(&e) <= precision)
}

/// `m`'s verdicts, if no more pairs can change them ([`settled`]): throughput's, and p99's
/// when p99 is gated. `None` below [`SETTLE_FLOOR`] pairs.
pub(super) fn settled_now(args: &CompareArgs, m: &ModelComparison) -> Option<Settled> {
    let n = u32::try_from(m.pairs.len()).unwrap_or(u32::MAX);
    if n < SETTLE_FLOOR {
        return None;
    }
    let (rps, p99) = quick_estimates(args, m);
    let throughput = settled(&rps?, args.threshold, true)?;
    let p99 = match args.p99_threshold.0 {
        Some(t) => Some(settled(&p99?, t, false)?),
        None => None,
    };
    Some(Settled {
        pairs: n,
        throughput,
        p99,
    })
}

/// The medians, estimates and verdicts of `m`'s pairs. A comparison cut short by Ctrl-C gets
/// estimates (for the models not caught mid-pair, which are marked failed) but no verdict: it
/// has fewer pairs than asked for (perhaps one, whose interval has no width), so a verdict
/// would claim what the pairs cannot show.
pub(super) fn summarise(
    args: &CompareArgs,
    mut m: ModelComparison,
    interrupted: bool,
) -> ModelComparison {
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
    // A model the loop stopped for being precise (or settled) is judged as such: the final
    // interval, from more resamples, may come out a hair wider at the boundary.
    let precision = if m.precise || m.stopped_settled {
        f64::INFINITY
    } else {
        precision
    };
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
