//! `loadgen run` from start to finish: check the flags, start the workers and the collector,
//! wait, and assemble the [`Report`].

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, SystemTime};

use crate::clock::{ns, Clock};
use crate::collector::{self, Setup};
use crate::config::{Arrivals, Engine, Op, Pacing, RunConfig};
use crate::counters::{self, CounterCheck};
use crate::engine::{self, Plan};
use crate::proc::{self, TreeSampler};
use crate::report::{self, ArrivalsReport, ClientCpu, OpenLoop, Report, StepReport};
use crate::schedule::Timetable;
use crate::stats::{Summary, Tally};
use crate::workload::Workload;

/// Set by the SIGINT handler: the run stops starting requests and reports what it has.
pub static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_sigint(_: nix::libc::c_int) {
    // Only an atomic store: the one thing a signal handler may safely do here.
    INTERRUPTED.store(true, Ordering::Relaxed);
}

/// Makes Ctrl-C (SIGINT) and SIGTERM (what `timeout(1)` sends) end the run early with a full
/// report instead of killing it. A second signal still kills it (SA_RESETHAND restores the
/// default action after the first).
pub fn install_sigint() {
    use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};
    let action = SigAction::new(
        SigHandler::Handler(on_sigint),
        SaFlags::SA_RESETHAND,
        SigSet::empty(),
    );
    for signal in [Signal::SIGINT, Signal::SIGTERM] {
        // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
        let _ = unsafe { sigaction(signal, &action) };
    }
}

/// Errors that stop a run before it starts.
#[derive(Debug)]
pub enum RunError {
    /// A flag, or a combination of flags, that cannot work.
    Usage(String),
    /// The system refused something loadgen needs (threads, epoll, the server's /proc).
    Setup(String),
    /// Ctrl-C (or SIGTERM) while waiting for `--start-at`: nothing was sent.
    Interrupted,
}

impl std::fmt::Display for RunError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RunError::Usage(m) | RunError::Setup(m) => f.write_str(m),
            RunError::Interrupted => f.write_str("interrupted before the start: nothing was sent"),
        }
    }
}

impl std::error::Error for RunError {}

/// Runs the load described by `config` and returns its report (also writing the files it
/// asks for). Progress goes to stderr when asked for. A configuration the engine cannot carry
/// out is refused here ([`RunConfig::checked`]) with [`RunError::Usage`].
pub fn run(config: &RunConfig) -> Result<Report, RunError> {
    let cfg = config.checked().map_err(RunError::Usage)?;
    if cfg.engine == Engine::Uring {
        if let Some(why) = crate::ring::unavailable() {
            return Err(RunError::Usage(why));
        }
    }
    let sampler = match cfg.server_pid {
        Some(pid) => Some(
            TreeSampler::new(pid)
                .map_err(|e| RunError::Setup(format!("--server-pid {pid}: {e}")))?,
        ),
        None => None,
    };
    let late = wait_for_start(cfg.start_at)?;
    let clock = Clock::start();
    let measure_from = ns(cfg.warmup);
    let stop_at = cfg.duration.map(|d| measure_from + ns(d));
    let timetable = cfg
        .pacing
        .schedule()
        .map(|s| Timetable::new(s, measure_from, stop_at));
    let plan = Arc::new(Plan {
        workload: Workload::for_config(&cfg),
        clock,
        measure_from,
        stop_at,
        timetable: timetable.clone(),
        interrupted: Arc::new(AtomicBool::new(false)),
        verified: AtomicBool::new(false),
        hold_for_sample: cfg.server_pid.is_some(),
        cfg: cfg.clone(),
    });

    let mine: Vec<u64> = (0..u64::from(cfg.connections))
        .filter(|&g| cfg.segment.is_none_or(|s| s.owns(g)))
        .collect();
    // Every slot offers the same share of the schedule, so a segment's is its slots'.
    let share = mine.len() as f64 / f64::from(cfg.connections);
    let (tx, rx) = crossbeam_channel::unbounded();
    let (release_tx, release_rx) = crossbeam_channel::bounded::<()>(0);
    let setup = Setup {
        count_syscalls: cfg.count_syscalls,
        threads: cfg.threads as usize,
        clock,
        measure_from,
        progress: collector::want_progress(cfg.outputs.progress),
        hlog: cfg.outputs.hlog.clone(),
        sampler,
        timetable: timetable.clone(),
        share,
        tag: cfg
            .segment
            .map(|s| format!("segment-{}-of-{}", s.index, s.count)),
    };
    let collector = thread::Builder::new()
        .name("collector".into())
        .spawn(move || collector::collect(setup, rx, release_tx))
        .map_err(|e| RunError::Setup(format!("cannot start the collector thread: {e}")))?;

    // This instance's connection slots (all of them, or a --segment's), dealt round-robin to
    // the threads, so each thread's share is spread over the timetable.
    let threads = cfg.threads as usize;
    let connections = u64::from(cfg.connections);
    let mut workers = Vec::new();
    for t in 0..threads {
        let globals: Vec<u64> = mine.iter().skip(t).step_by(threads).copied().collect();
        let budget = cfg.requests.map(|n| {
            globals
                .iter()
                .map(|&g| engine::share(n, connections, g))
                .sum()
        });
        let worker_plan = Arc::clone(&plan);
        let tx = tx.clone();
        let release = release_rx.clone();
        let spawned = thread::Builder::new()
            .name(format!("worker-{t}"))
            .spawn(move || engine::run_thread(&worker_plan, t, globals, budget, tx, release));
        match spawned {
            Ok(h) => workers.push(h),
            Err(e) => {
                plan.interrupted.store(true, Ordering::Relaxed);
                return Err(RunError::Setup(format!(
                    "cannot start worker thread {t}: {e}"
                )));
            }
        }
    }
    drop(tx);
    drop(release_rx);

    // Relay Ctrl-C to the workers while they run.
    let watcher_plan = Arc::clone(&plan);
    let mut results = Vec::new();
    let mut notes = Vec::new();
    let mut finished = 0;
    while finished < workers.len() {
        if INTERRUPTED.load(Ordering::Relaxed) {
            watcher_plan.interrupted.store(true, Ordering::Relaxed);
        }
        if workers[finished].is_finished() {
            finished += 1;
        } else {
            thread::sleep(Duration::from_millis(5));
        }
    }
    for (t, w) in workers.into_iter().enumerate() {
        match w.join() {
            Ok(Ok(r)) => results.push(r),
            Ok(Err(e)) => notes.push(format!("worker {t} stopped: {e}")),
            Err(_) => notes.push(format!("worker {t} panicked")),
        }
    }
    let collected = collector
        .join()
        .map_err(|_| RunError::Setup("the collector thread panicked".into()))?;
    notes.extend(collected.notes);
    let interrupted = INTERRUPTED.load(Ordering::Relaxed);
    if interrupted {
        notes.push("interrupted (SIGINT or SIGTERM): the figures cover the run so far".into());
    }

    let mut tally = Tally::default();
    let mut examples = Vec::new();
    let mut finished_at = 0;
    if results.iter().any(|r| r.gave_up) {
        notes.push("stopped early: every connection kept failing and no reply was verified".into());
    }
    for r in &results {
        tally.merge(&r.tally);
        for e in &r.examples {
            // Threads meet the same failure: each example once.
            if !examples.contains(e) {
                examples.push(e.clone());
            }
        }
        finished_at = finished_at.max(r.finished_at);
    }
    examples.truncate(8);
    let end = match plan.stop_at {
        Some(stop) if !INTERRUPTED.load(Ordering::Relaxed) => stop.min(finished_at),
        _ => finished_at,
    };
    let elapsed_s = end.saturating_sub(measure_from) as f64 / 1e9;
    let per_s = |n: u64| {
        if elapsed_s > 0.0 {
            n as f64 / elapsed_s
        } else {
            0.0
        }
    };

    let open_loop = match (&cfg.pacing, &timetable) {
        (Pacing::Open(schedule), Some(tt)) => {
            // The rate asked for over the window: the constant one, or the schedule's mean.
            let rate = schedule
                .constant_rate()
                .unwrap_or_else(|| tt.mean_rate(measure_from, end))
                * share;
            Some(OpenLoop {
                rate,
                // The share of the timetable honoured: sends over sends plus the slots that
                // never left. (Dividing by the elapsed time would count the last replies'
                // latency and the drain as time the client failed to send in.)
                achieved_rps: honoured(rate, tally.counts.sent, tally.counts.unsent),
                lag_us: Summary::of(&tally.lag),
                unsent: tally.counts.unsent,
                arrivals: ArrivalsReport {
                    process: cfg.arrivals,
                    seed: (cfg.arrivals == Arrivals::Poisson).then(|| cfg.seed()),
                    gap_us: mine.len() as f64 * 1e6 / rate,
                    measured_gap_us: (tally.gaps.count > 0).then(|| tally.gaps.mean_us()),
                    cv: match cfg.arrivals {
                        Arrivals::Fixed => 0.0,
                        Arrivals::Poisson => 1.0,
                    },
                    measured_cv: (tally.gaps.count > 1).then(|| tally.gaps.cv()),
                    gaps: tally.gaps.count,
                },
                steps: schedule
                    .varies()
                    .then(|| step_reports(schedule, tt, share, &tally, measure_from, end)),
            })
        }
        _ => None,
    };
    let mut invalid_reasons = open_loop
        .as_ref()
        .map(report::open_loop_validity)
        .unwrap_or_default();
    let gave_up = results.iter().any(|r| r.gave_up);
    if elapsed_s <= 0.0 {
        invalid_reasons.push(if gave_up {
            "nothing was measured (it gave up during the warmup)".into()
        } else {
            "nothing was measured (the run ended during the warmup)".into()
        });
    }
    // Every worker has finished: no increment of the run is still on its way, so the
    // counters hold all they ever will. Read even after a Ctrl-C or a dead server (it fails
    // fast then, and says why): the check is what a fault-injection run is for.
    let counters = (cfg.op == Op::Incr).then(|| {
        let values = counters::read_values(&cfg, &plan.workload);
        CounterCheck::new(&cfg, &tally.keys, values)
    });
    let ok = tally.errors.total() == 0
        && tally.counts.indeterminate == 0
        && tally.counts.failed == 0
        && tally.counts.ok > 0
        && results.len() == cfg.threads as usize
        && counters.as_ref().is_none_or(|k| k.exactly_once);
    if tally.counts.ok == 0 && tally.errors.total() == 0 {
        // With errors, the summary's cause line says why instead.
        notes.push("no reply was verified".into());
    }
    let requests = tally.counts.ok;
    let cpu = collected.own_cpu;
    let server = collected
        .server
        .as_ref()
        .zip(cfg.server_pid)
        .map(|((a, b, peaks), pid)| proc::server_cost(pid, a, b, peaks, requests))
        .map(|mut cost| {
            cost.syscalls_per_request = collected
                .syscalls
                .and_then(|(_, server)| server)
                .filter(|_| requests > 0)
                .map(|n| n as f64 / requests as f64);
            cost
        });
    let report = Report {
        tool: format!("loadgen {}", env!("CARGO_PKG_VERSION")),
        params: cfg.clone(),
        machine: proc::machine_info(),
        clock: {
            let from = clock.wall(measure_from);
            report::RunClock {
                measured_from: crate::config::rfc3339(from),
                measured_from_unix_s: from
                    .duration_since(SystemTime::UNIX_EPOCH)
                    .map_or(0.0, |d| d.as_secs_f64()),
                start_late_s: late.map(|d| d.as_secs_f64()),
                source: report::CLOCK_SOURCE,
            }
        },
        elapsed_s,
        throughput_rps: per_s(tally.counts.ok),
        bytes_per_request: tally
            .counts
            .bytes_per_request()
            .map(|(sent, received)| report::BytesPerRequest { sent, received }),
        counts: tally.counts,
        errors: tally.errors,
        refusals: tally.refusals,
        counters,
        diagnosis: report::diagnose(
            &cfg.addr.to_string(),
            cfg.protocol,
            cfg.timeout,
            &tally.counts,
            &tally.errors,
        ),
        error_examples: examples,
        latency_us: Summary::of(&tally.latency),
        latency_uncorrected_us: open_loop.as_ref().map(|_| Summary::of(&tally.uncorrected)),
        connect_us: (!tally.connect.is_empty()).then(|| Summary::of(&tally.connect)),
        valid: invalid_reasons.is_empty(),
        invalid_reasons,
        open_loop,
        client_cpu: ClientCpu {
            user_s: cpu.user_us as f64 / 1e6,
            system_s: cpu.system_us as f64 / 1e6,
            us_per_request: if requests > 0 {
                (cpu.user_us + cpu.system_us) as f64 / requests as f64
            } else {
                0.0
            },
            syscalls_per_request: collected
                .syscalls
                .filter(|&(own, _)| own > 0 && requests > 0)
                .map(|(own, _)| own as f64 / requests as f64),
        },
        server,
        intervals: collected.intervals,
        notes,
        interrupted,
        ok,
    };
    let mut write_notes = Vec::new();
    if let Some(path) = &cfg.outputs.hgrm {
        if let Err(e) = report::write_hgrm(&tally.latency, path) {
            write_notes.push(format!("cannot write {}: {e}", path.display()));
        }
    }
    let mut report = report;
    report.notes.extend(write_notes);
    if let Some(path) = &cfg.outputs.json {
        if let Err(e) = report.write_json(path) {
            report
                .notes
                .push(format!("cannot write {}: {e}", path.display()));
        }
    }
    Ok(report)
}

/// Waits until `start_at` on the wall clock, if given, in short sleeps so that Ctrl-C ends
/// the wait. Returns how late the start was (a time already past by more than a second is
/// refused: the other segments started without this one).
fn wait_for_start(start_at: Option<SystemTime>) -> Result<Option<Duration>, RunError> {
    let Some(at) = start_at else {
        return Ok(None);
    };
    loop {
        if INTERRUPTED.load(Ordering::Relaxed) {
            return Err(RunError::Interrupted);
        }
        match at.duration_since(SystemTime::now()) {
            Ok(left) if left.is_zero() => return Ok(Some(Duration::ZERO)),
            Ok(left) => thread::sleep(left.min(Duration::from_millis(50))),
            Err(past) if past.duration() <= Duration::from_secs(1) => {
                return Ok(Some(past.duration()))
            }
            Err(past) => {
                return Err(RunError::Usage(format!(
                    "--start-at {} was {:.1} s ago: the other segments started without this one",
                    crate::config::rfc3339(at),
                    past.duration().as_secs_f64()
                )))
            }
        }
    }
}

/// The rate honoured of `rate` asked for: `rate` times the share of the timetable sent.
fn honoured(rate: f64, sent: u64, unsent: u64) -> f64 {
    match sent + unsent {
        0 => 0.0,
        slots => rate * sent as f64 / slots as f64,
    }
}

/// A row per step of a ramp or steps that began before the run ended `end`.
fn step_reports(
    schedule: &crate::config::Schedule,
    tt: &Timetable,
    share: f64,
    tally: &Tally,
    measure_from: u64,
    end: u64,
) -> Vec<StepReport> {
    let pieces = schedule.pieces();
    tt.steps()
        .iter()
        .zip(&tally.steps)
        .filter(|((start, _, _), _)| *start < end)
        .map(|(&(start, stop, piece), t)| {
            let stop = stop.min(end);
            let (from, to) = match piece.and_then(|i| pieces.get(i)) {
                Some(p) => (p.from_rps, p.to_rps),
                // The hold after the schedule, at its last rate.
                None => {
                    let last = pieces.last().map_or(0.0, |p| p.to_rps);
                    (last, last)
                }
            };
            let target_rps = tt.mean_rate(start, stop) * share;
            let achieved_rps = honoured(target_rps, t.sent, t.unsent);
            StepReport {
                start_s: start.saturating_sub(measure_from) as f64 / 1e9,
                end_s: stop.saturating_sub(measure_from) as f64 / 1e9,
                target_from_rps: from * share,
                target_to_rps: to * share,
                target_rps,
                achieved_rps,
                // A step with nothing scheduled in it (a rate under one request per its
                // length) missed nothing.
                achieved: t.sent + t.unsent == 0
                    || achieved_rps >= report::MIN_RATE_FRACTION * target_rps,
                sent: t.sent,
                unsent: t.unsent,
                ok: t.ok,
                failed: t.failed,
                indeterminate: t.indeterminate,
                latency_us: Summary::of(&t.latency),
            }
        })
        .collect()
}
