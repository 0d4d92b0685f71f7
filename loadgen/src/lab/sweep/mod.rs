//! `loadgen sweep`: latency against offered load, from a trickle to past the server's
//! capacity, and the knee where it leaves an objective.
//!
//! A single open-loop run is one point; the curve is what teaches queueing. The sweep first
//! measures the server's closed-loop capacity with the load given (the most it serves when
//! every reply immediately frees a request), then offers fractions of it, lowest first, each
//! as a run of its own (fresh connections, its own warmup, so the queue one rate leaves does
//! not land in the next). A run is a point only if `loadgen run` itself would call it a
//! valid measurement: the client kept its schedule and sent at least 99% of the timetable.
//! A rate the server could not take is reported as not achieved, never as a latency. Once two
//! rates in a row have run away (a p99 past `--runaway` times the SLO, or the rate not
//! achieved), or a run had errors, that curve climbs no further in that round: the rates
//! above would only queue longer. Two, because one run's tail can be one stall of a shared
//! machine (a virtual machine's stolen time reaches tens of milliseconds), which the next
//! rate does not repeat.
//!
//! Each round runs every rate once for each arrival process, the processes side by side at
//! each rate (fixed, then Poisson, then the next rate), so a machine that drifts during the
//! sweep does not favour one process. Figures are medians over the rounds, and the knee is
//! decided from them ([`report::knee`]).

pub mod report;

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::time::Duration;

use clap::Args;
use echolab_protocol::units::{parse_addr, parse_duration, parse_timeout};

use crate::cli::LoadArgs;
use crate::config::{Arrivals, Outputs, Pacing, Progress, RunConfig};
use crate::report::{Report, MIN_RATE_FRACTION};
use crate::run;
use crate::stats::median;
use report::{knee, Capacity, Curve, Point, SweepParams, SweepReport};

/// `loadgen sweep`: step the open-loop rate up to past the server's capacity and find the
/// knee.
#[derive(Debug, Clone, Args)]
pub struct SweepArgs {
    /// Server address, HOST:PORT.
    #[arg(long, default_value = "127.0.0.1:7000", value_parser = parse_addr)]
    pub addr: std::net::SocketAddr,

    /// What load each run offers (the connections and pipeline bound what can be in flight:
    /// at a rate whose latency needs more, sends wait, and the rate is not achieved).
    #[command(flatten)]
    pub load: LoadArgs,

    /// The objective: the knee is the highest offered rate whose p99 is at most this, below
    /// the first rate whose p99 is not (e.g. 1ms, 500us).
    #[arg(long, value_name = "DURATION", default_value = "1ms", value_parser = parse_duration)]
    pub slo_p99: Duration,

    /// Arrival processes to sweep, side by side at each rate (fixed, poisson, or both).
    #[arg(long, value_delimiter = ',', default_value = "fixed,poisson")]
    pub arrivals: Vec<Arrivals>,

    /// The lowest offered rate, as a fraction of the capacity.
    #[arg(long, default_value_t = 0.1)]
    pub from: f64,

    /// The highest offered rate, as a fraction of the capacity (above 1 shows the wall).
    #[arg(long, default_value_t = 1.2)]
    pub to: f64,

    /// How many rates, evenly spaced from --from to --to.
    #[arg(long, default_value_t = 12, value_parser = clap::value_parser!(u32).range(1..=200))]
    pub points: u32,

    /// Skip measuring the capacity: sweep fractions of this many requests per second.
    #[arg(long, value_name = "R", value_parser = crate::config::parse_rate)]
    pub capacity: Option<f64>,

    /// Measured time of each capacity run.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    pub capacity_duration: Duration,

    /// Measured time of each open-loop run.
    #[arg(short, long, default_value = "2s", value_parser = parse_duration)]
    pub duration: Duration,

    /// Warmup of each run (capacity runs included).
    #[arg(long, default_value = "500ms", value_parser = parse_duration)]
    pub warmup: Duration,

    /// Rounds: each rate runs once per round and arrival process; figures are medians.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub repeat: u32,

    /// A curve stops climbing (for the round) after two rates in a row whose p99 is above this
    /// many times the SLO (or whose rate was not achieved).
    #[arg(long, default_value_t = 10.0)]
    pub runaway: f64,

    /// With poisson arrivals: the first round's seed; round r uses seed + r, so the rounds
    /// sample different timetables and the sweep as a whole is still repeatable.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,

    /// Per-request limit, as in `loadgen run`.
    #[arg(long, default_value = "5s", value_parser = parse_timeout)]
    pub timeout: Duration,

    /// Report the server's CPU per request at each rate (its process tree, Linux /proc).
    #[arg(long, value_name = "PID")]
    pub server_pid: Option<i32>,

    /// Write every figure as JSON.
    #[arg(long, value_name = "PATH")]
    pub json: Option<PathBuf>,

    /// No line on stderr per run.
    #[arg(short, long)]
    pub quiet: bool,
}

/// The highest rate a run may be asked for (`loadgen run --rate`'s limit).
const MAX_RATE: f64 = 100e6;

/// Rates in a row that must run away before a curve stops climbing in a round.
const RUNAWAY_STRIKES: u32 = 2;

/// How a sweep runs, built from [`SweepArgs`] or by the suite.
#[derive(Debug, Clone)]
pub struct SweepPlan {
    /// Every run's configuration but its pacing, arrivals, seed and times.
    pub base: RunConfig,
    /// p99 objective, µs.
    pub slo_p99_us: u64,
    /// Arrival processes, side by side.
    pub arrivals: Vec<Arrivals>,
    /// Offered rates as fractions of the capacity, lowest first.
    pub fractions: Vec<f64>,
    /// Given capacity (skip the closed-loop runs).
    pub capacity: Option<f64>,
    /// Measured time per capacity run.
    pub capacity_duration: Duration,
    /// Measured time per open-loop run.
    pub duration: Duration,
    /// Warmup per run.
    pub warmup: Duration,
    /// Rounds.
    pub repeat: u32,
    /// Stop climbing past this many times the SLO.
    pub runaway: f64,
    /// First round's seed.
    pub seed: u64,
}

impl SweepArgs {
    /// Checks the flags and builds the plan.
    pub fn plan(&self) -> Result<SweepPlan, String> {
        if !(self.from > 0.0 && self.from <= self.to && self.to <= 10.0) {
            return Err(format!(
                "--from {} --to {}: fractions of the capacity with 0 < from <= to <= 10",
                self.from, self.to
            ));
        }
        if !(self.runaway.is_finite() && self.runaway >= 1.0) {
            return Err("--runaway must be at least 1 (times the SLO)".into());
        }
        if self.slo_p99 < Duration::from_micros(1) {
            return Err(
                "--slo-p99 must be at least 1us (latency is recorded in microseconds)".into(),
            );
        }
        for (flag, d) in [
            ("--duration", self.duration),
            ("--capacity-duration", self.capacity_duration),
        ] {
            if d.is_zero() {
                return Err(format!("{flag} must be above 0"));
            }
        }
        if let Some(c) = self.capacity {
            if c * self.to > MAX_RATE {
                return Err(format!(
                    "--capacity {c} --to {}: the highest rate would be {:.0} req/s, above \
                     loadgen's {MAX_RATE:.0}",
                    self.to,
                    c * self.to
                ));
            }
        }
        if self.load.op == crate::config::Op::Incr {
            return Err(
                "--op incr does not go with a sweep: its exactly-once check reads counters \
                 that every run of the sweep would add to"
                    .into(),
            );
        }
        // Each process once, in the order given.
        let mut arrivals: Vec<Arrivals> = Vec::new();
        for &a in &self.arrivals {
            if !arrivals.contains(&a) {
                arrivals.push(a);
            }
        }
        if arrivals.is_empty() {
            return Err("--arrivals needs fixed, poisson or both".into());
        }
        let fractions = fractions(self.from, self.to, self.points);
        let base = self
            .load
            .apply(RunConfig {
                addr: self.addr,
                timeout: self.timeout,
                server_pid: self.server_pid,
                ..RunConfig::default()
            })
            .checked()?;
        Ok(SweepPlan {
            base,
            slo_p99_us: self.slo_p99.as_micros() as u64,
            arrivals,
            fractions,
            capacity: self.capacity,
            capacity_duration: self.capacity_duration,
            duration: self.duration,
            warmup: self.warmup,
            repeat: self.repeat,
            runaway: self.runaway,
            seed: self.seed,
        })
    }
}

/// `n` fractions of the capacity evenly spaced from `from` to `to` (`from` alone when `n` is
/// 1): `--from --to --points`, and the suite's sweep rates.
pub fn fractions(from: f64, to: f64, n: u32) -> Vec<f64> {
    (0..n)
        .map(|i| {
            if n <= 1 {
                from
            } else {
                from + (to - from) * f64::from(i) / f64::from(n - 1)
            }
        })
        .collect()
}

/// One run's figures, as the sweep keeps them.
#[derive(Debug, Clone)]
pub struct Sample {
    /// The rate offered.
    offered_rps: f64,
    valid: bool,
    invalid_reasons: Vec<String>,
    achieved_rps: f64,
    /// The rate was sent (the 99% rule), whatever the client's lag.
    rate_kept: bool,
    p50: u64,
    p99: u64,
    p999: u64,
    max: u64,
    errors: u64,
    error_example: Option<String>,
    server_cpu_us: Option<f64>,
}

impl Sample {
    fn of(r: &Report) -> Sample {
        let errors = r.errors.total() + r.counts.failed + r.counts.indeterminate;
        let (offered_rps, achieved_rps, rate_kept) = match &r.open_loop {
            Some(o) => (
                o.rate,
                o.achieved_rps,
                o.achieved_rps >= MIN_RATE_FRACTION * o.rate,
            ),
            None => (r.throughput_rps, r.throughput_rps, true),
        };
        Sample {
            offered_rps,
            valid: r.valid && errors == 0 && r.counts.ok > 0,
            invalid_reasons: r.invalid_reasons.clone(),
            achieved_rps,
            rate_kept,
            p50: r.latency_us.p50,
            p99: r.latency_us.p99,
            p999: r.latency_us.p999,
            max: r.latency_us.max,
            errors,
            error_example: r.error_examples.first().cloned(),
            server_cpu_us: r.server.as_ref().map(|s| s.cpu_us_per_request),
        }
    }
}

/// One round's runs: for each arrival process (in the plan's order), the run at each rate
/// (`None` above where the curve ran away).
pub type Round = Vec<Vec<Option<Sample>>>;

/// Measures the closed-loop capacity: `runs` runs of the plan's load, their median. An error
/// says why a run did not measure cleanly (nothing to sweep against).
pub fn measure_capacity(
    plan: &SweepPlan,
    runs: u32,
    log: &mut dyn FnMut(&str),
) -> Result<Capacity, String> {
    if let Some(rps) = plan.capacity {
        return Ok(Capacity {
            rps,
            runs: Vec::new(),
            server_cpu_us: None,
        });
    }
    let cfg = RunConfig {
        pacing: Pacing::Closed,
        arrivals: Arrivals::Fixed,
        seed: None,
        warmup: plan.warmup,
        duration: Some(plan.capacity_duration),
        requests: None,
        outputs: quiet(),
        ..plan.base.clone()
    };
    let mut rps = Vec::new();
    let mut cpu = Vec::new();
    for run in 0..runs {
        if interrupted() {
            break;
        }
        let r = run::run(&cfg).map_err(|e| e.to_string())?;
        if r.interrupted {
            // Cut short by Ctrl-C: not a measurement of the capacity.
            break;
        }
        let s = Sample::of(&r);
        if !s.valid || r.throughput_rps <= 0.0 {
            return Err(format!(
                "the closed-loop capacity run {} of {runs} did not measure cleanly ({}); fix \
                 that before sweeping:\n{}",
                run + 1,
                if s.errors > 0 {
                    format!("{} errors", s.errors)
                } else {
                    s.invalid_reasons.join("; ")
                },
                r.summary()
            ));
        }
        log(&format!(
            "capacity run {}/{runs}: {:.0} req/s closed loop, p99 {}",
            run + 1,
            r.throughput_rps,
            crate::stats::fmt_us(s.p99)
        ));
        rps.push(r.throughput_rps);
        cpu.extend(s.server_cpu_us);
    }
    if rps.is_empty() {
        return Err("interrupted before the capacity was measured".into());
    }
    Ok(Capacity {
        rps: median(rps.clone()),
        server_cpu_us: (!cpu.is_empty()).then(|| median(cpu)),
        runs: rps,
    })
}

/// One round: every rate (the plan's fractions of `capacity`), lowest first, each arrival
/// process side by side at each; a process stops climbing after a run with errors, or after
/// two rates in a row that did not keep their rate or ran past `--runaway` times the SLO.
/// `round` picks the Poisson seed.
pub fn round(
    plan: &SweepPlan,
    capacity: f64,
    round: u32,
    log: &mut dyn FnMut(&str),
) -> Result<Round, String> {
    let mut out: Round = vec![vec![None; plan.fractions.len()]; plan.arrivals.len()];
    let runaway_us = (plan.runaway * plan.slo_p99_us as f64) as u64;
    let mut climbing = vec![true; plan.arrivals.len()];
    // Rates in a row that ran away, per arrival process.
    let mut strikes = vec![0u32; plan.arrivals.len()];
    for (i, &fraction) in plan.fractions.iter().enumerate() {
        // A measured capacity times --to may pass what loadgen can be asked for.
        let rate = (fraction * capacity).clamp(0.01, MAX_RATE);
        for (a, &arrivals) in plan.arrivals.iter().enumerate() {
            if !climbing[a] || interrupted() {
                continue;
            }
            let cfg = RunConfig {
                pacing: Pacing::open(rate),
                arrivals,
                seed: (arrivals == Arrivals::Poisson)
                    .then(|| plan.seed.wrapping_add(u64::from(round))),
                warmup: plan.warmup,
                duration: Some(plan.duration),
                requests: None,
                outputs: quiet(),
                ..plan.base.clone()
            };
            let r = run::run(&cfg).map_err(|e| e.to_string())?;
            let s = Sample::of(&r);
            log(&format!(
                "round {} {:>7} {:>9.0} req/s ({:>3.0}%): sent {:>9.0}/s  p99 {:>9}  {}",
                round + 1,
                arrivals.to_string(),
                rate,
                100.0 * fraction,
                s.achieved_rps,
                crate::stats::fmt_us(s.p99),
                if s.valid {
                    "ok".to_string()
                } else if s.errors > 0 {
                    format!("{} errors", s.errors)
                } else {
                    "invalid".to_string()
                }
            ));
            if !s.rate_kept || s.p99 > runaway_us {
                strikes[a] += 1;
            } else {
                strikes[a] = 0;
            }
            if s.errors > 0 || strikes[a] >= RUNAWAY_STRIKES {
                climbing[a] = false;
            }
            out[a][i] = Some(s);
        }
    }
    Ok(out)
}

/// Removes the last run `round` made (rates in order, the arrival processes side by side at
/// each): when Ctrl-C lands during a round, that run is the one it may have cut short, and a
/// run cut short is not a measurement. The round runs nothing after it.
pub fn drop_last_run(round: &mut Round) {
    let points = round.iter().map(Vec::len).max().unwrap_or(0);
    for i in (0..points).rev() {
        for curve in round.iter_mut().rev() {
            if let Some(run) = curve.get_mut(i).filter(|r| r.is_some()) {
                *run = None;
                return;
            }
        }
    }
}

/// The report of a sweep from its capacity and rounds (each point's runs merged across them).
pub fn summarise(plan: &SweepPlan, capacity: Capacity, rounds: &[Round]) -> SweepReport {
    let mut notes = Vec::new();
    let mut errors = false;
    let curves = plan
        .arrivals
        .iter()
        .enumerate()
        .map(|(a, &arrivals)| {
            let points: Vec<Point> = plan
                .fractions
                .iter()
                .enumerate()
                .map(|(i, &fraction)| {
                    let runs: Vec<&Sample> = rounds
                        .iter()
                        .filter_map(|r| r.get(a).and_then(|c| c.get(i)).and_then(Option::as_ref))
                        .collect();
                    for s in runs.iter().filter(|s| s.errors > 0) {
                        errors = true;
                        let note = format!(
                            "{arrivals} at {:.0} req/s had errors: {}",
                            s.offered_rps,
                            s.error_example.clone().unwrap_or_default()
                        );
                        if !notes.contains(&note) {
                            notes.push(note);
                        }
                    }
                    point(fraction * capacity.rps, fraction, &runs)
                })
                .collect();
            Curve {
                arrivals,
                knee: knee(&points, plan.slo_p99_us),
                points,
            }
        })
        .collect();
    let interrupted = interrupted();
    if interrupted {
        notes.push("interrupted (SIGINT or SIGTERM): the figures cover the sweep so far".into());
    }
    let b = &plan.base;
    SweepReport {
        tool: format!("loadgen {}", env!("CARGO_PKG_VERSION")),
        params: SweepParams {
            addr: b.addr.to_string(),
            load: format!(
                "{} {} {} B, {} connections, pipeline {}, {} thread(s)",
                b.protocol.name(),
                b.op,
                b.payload,
                b.connections,
                b.pipeline,
                b.threads
            ),
            slo_p99_us: plan.slo_p99_us,
            fractions: plan.fractions.clone(),
            step_s: plan.duration.as_secs_f64(),
            warmup_s: plan.warmup.as_secs_f64(),
            repeat: plan.repeat,
            runaway: plan.runaway,
        },
        capacity,
        curves,
        notes,
        errors,
        interrupted,
    }
}

/// Runs a whole sweep against one server: the capacity (`repeat` runs, their median), then
/// `repeat` rounds at the same rates. `log` gets a line per run (the suite indents them;
/// `loadgen sweep` prints them on stderr). An error means nothing could be measured.
pub fn sweep(plan: &SweepPlan, log: &mut dyn FnMut(&str)) -> Result<SweepReport, String> {
    let capacity = measure_capacity(plan, plan.repeat, log)?;
    let mut rounds = Vec::new();
    for r in 0..plan.repeat {
        if interrupted() {
            break;
        }
        let mut made = round(plan, capacity.rps, r, log)?;
        if interrupted() {
            drop_last_run(&mut made);
        }
        rounds.push(made);
    }
    Ok(summarise(plan, capacity, &rounds))
}

/// One rate's runs, summarised: achieved when most were valid, latencies the medians of the
/// valid ones. The offered rate is the median of the runs' when they were made against
/// different capacities (the suite measures one per repetition).
fn point(rate: f64, fraction: f64, runs: &[&Sample]) -> Point {
    let valid: Vec<&&Sample> = runs.iter().filter(|s| s.valid).collect();
    let achieved = !runs.is_empty() && 2 * valid.len() > runs.len();
    let med = |f: fn(&Sample) -> u64| -> u64 {
        if achieved {
            median(valid.iter().map(|s| f(s) as f64).collect()).round() as u64
        } else {
            0
        }
    };
    let cpu: Vec<f64> = runs.iter().filter_map(|s| s.server_cpu_us).collect();
    let mut reasons: Vec<String> = Vec::new();
    for r in runs.iter().flat_map(|s| &s.invalid_reasons) {
        if !reasons.contains(r) {
            reasons.push(r.clone());
        }
    }
    Point {
        offered_rps: if runs.is_empty() {
            rate
        } else {
            median(runs.iter().map(|s| s.offered_rps).collect())
        },
        utilisation: fraction,
        runs: runs.len() as u32,
        valid_runs: valid.len() as u32,
        achieved,
        achieved_rps: median(runs.iter().map(|s| s.achieved_rps).collect()),
        p50_us: med(|s| s.p50),
        p99_us: med(|s| s.p99),
        p999_us: med(|s| s.p999),
        max_us: med(|s| s.max),
        errors: runs.iter().map(|s| s.errors).sum(),
        server_cpu_us: (!cpu.is_empty()).then(|| median(cpu)),
        invalid_reasons: reasons,
    }
}

fn quiet() -> Outputs {
    Outputs {
        progress: Progress::Never,
        ..Outputs::default()
    }
}

fn interrupted() -> bool {
    run::INTERRUPTED.load(Ordering::Relaxed)
}

/// `loadgen sweep` from its flags: runs, and writes the JSON. Returns the report and, if the
/// JSON could not be written, why (the report is still printed: the measurements stand); or
/// a usage error (`Err((2, message))`) or a failure to measure (`Err((1, ...))`).
pub fn sweep_command(args: &SweepArgs) -> Result<(SweepReport, Option<String>), (u8, String)> {
    let plan = args.plan().map_err(|m| (2, m))?;
    let quiet = args.quiet;
    let report = sweep(&plan, &mut |line| {
        if !quiet {
            eprintln!("loadgen sweep: {line}");
        }
    })
    .map_err(|m| (1, m))?;
    let write_error = args.json.as_ref().and_then(|path| {
        let written = serde_json::to_string_pretty(&report)
            .map_err(|e| e.to_string())
            .and_then(|text| std::fs::write(path, text + "\n").map_err(|e| e.to_string()));
        written
            .err()
            .map(|e| format!("cannot write {}: {e}", path.display()))
    });
    Ok((report, write_error))
}
