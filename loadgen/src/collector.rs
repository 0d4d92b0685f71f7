//! The collector thread: merges the workers' per-second histograms, prints the live line,
//! writes the interval log, and samples the server's process tree.
//!
//! Workers never wait for it: they send an [`Interval`] over a crossbeam channel once a second
//! and go on. The collector merges interval `i` once every thread has sent it (or a later
//! one), so a slow thread delays the live line, never the load.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufWriter, IsTerminal, Write};
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use hdrhistogram::serialization::interval_log::IntervalLogWriterBuilder;
use hdrhistogram::serialization::V2DeflateSerializer;
use hdrhistogram::Histogram;
use serde::Serialize;

use crate::clock::{Clock, NANOS};
use crate::engine::ToCollector;
use crate::proc::{self, CpuTimes, Peaks, TreeSample, TreeSampler};
use crate::stats;

/// What the collector needs to know.
#[derive(Debug)]
pub struct Setup {
    /// Worker threads sending intervals.
    pub threads: usize,
    /// The run's clock.
    pub clock: Clock,
    /// Start of the measured window (run time).
    pub measure_from: u64,
    /// Print a live line on stderr.
    pub progress: bool,
    /// Write the interval log here.
    pub hlog: Option<PathBuf>,
    /// Sample this process tree.
    pub sampler: Option<TreeSampler>,
}

/// One second of the run, merged over threads.
#[derive(Debug, Clone, Serialize)]
pub struct IntervalSummary {
    /// Seconds since the measured window began.
    pub t_s: u64,
    /// Replies verified in this second.
    pub ok: u64,
    /// Errors in this second.
    pub errors: u64,
    /// Median latency, µs.
    pub p50_us: u64,
    /// 99th percentile, µs.
    pub p99_us: u64,
    /// Largest, µs.
    pub max_us: u64,
}

/// What the collector hands back.
#[derive(Debug, Default)]
pub struct Collected {
    /// The per-second figures.
    pub intervals: Vec<IntervalSummary>,
    /// loadgen's own CPU time over the measured window.
    pub own_cpu: CpuTimes,
    /// Server samples at the start and end of the window, and the peaks in between.
    pub server: Option<(TreeSample, TreeSample, Peaks)>,
    /// Problems worth a line in the summary (the server vanished, the log could not be written).
    pub notes: Vec<String>,
}

/// Runs the collector until every worker has hung up. When every worker has said it is done
/// (or hung up), the closing samples are taken and `release` is dropped, which lets the
/// workers close their connections.
pub fn collect(mut setup: Setup, rx: Receiver<ToCollector>, release: Sender<()>) -> Collected {
    let mut out = Collected::default();
    let mut pending: BTreeMap<u64, (usize, Histogram<u64>, u64, u64)> = BTreeMap::new();

    // The interval log's BaseTime is the wall-clock start of the measured window, so each
    // interval's timestamp is its offset into the window.
    let until_start = setup.measure_from.saturating_sub(setup.clock.now());
    let wall_start = SystemTime::now() + Duration::from_nanos(until_start);
    let mut file = setup
        .hlog
        .as_ref()
        .and_then(|path| match File::create(path) {
            Ok(f) => Some(BufWriter::new(f)),
            Err(e) => {
                out.notes
                    .push(format!("cannot write {}: {e}", path.display()));
                None
            }
        });
    let mut serializer = V2DeflateSerializer::new();
    let mut hlog = file.as_mut().and_then(|f| {
        IntervalLogWriterBuilder::new()
            .add_comment("echolab loadgen: one histogram per second; values in microseconds")
            .with_start_time(wall_start)
            .with_base_time(wall_start)
            .with_max_value_divisor(1000.0)
            .begin_log_with(f, &mut serializer)
            .ok()
    });

    // Wait for the end of the warmup, then take the starting samples.
    let mut started = false;
    let mut cpu_start = CpuTimes::default();
    let mut server_start: Option<TreeSample> = None;
    let mut server_last: Option<TreeSample> = None;
    let mut peaks = Peaks::default();
    let mut next_sample = setup.measure_from;
    let mut done = 0;
    let mut release = Some(release);
    let mut closing: Option<(CpuTimes, Option<TreeSample>)> = None;

    loop {
        if closing.is_none() && done >= setup.threads {
            closing = Some(closing_samples(&mut setup, &mut peaks, &mut out.notes));
            release = None;
        }
        let now = setup.clock.now();
        if now >= next_sample {
            if !started {
                started = true;
                cpu_start = proc::own_cpu();
            }
            if let Some(sampler) = setup.sampler.as_mut() {
                match sampler.sample(true) {
                    Ok(s) => {
                        peaks.update(&s);
                        if server_start.is_none() {
                            server_start = Some(s.clone());
                        }
                        server_last = Some(s);
                    }
                    Err(e) => {
                        out.notes.push(format!("server sampling stopped: {e}"));
                        setup.sampler = None;
                    }
                }
            }
            next_sample = next_sample.max(now) + NANOS;
        }
        let wait = Duration::from_nanos(next_sample.saturating_sub(setup.clock.now()));
        match rx.recv_timeout(wait) {
            Ok(ToCollector::Done) => done += 1,
            Ok(ToCollector::Interval(iv)) => {
                let entry = pending
                    .entry(iv.index)
                    .or_insert_with(|| (0, stats::new_histogram(), 0, 0));
                entry.0 += 1;
                let _ = entry.1.add(&iv.latency);
                entry.2 += iv.ok;
                entry.3 += iv.errors;
                // An interval is complete once every thread sent it, or a thread moved past it.
                while let Some((&index, entry)) = pending.iter().next() {
                    let newest = pending.keys().next_back().copied().unwrap_or(index);
                    if entry.0 < setup.threads && newest == index {
                        break;
                    }
                    let Some((_, (_, h, ok, errors))) = pending.pop_first() else {
                        break;
                    };
                    finish_interval(&mut out, index, &h, ok, errors, setup.progress);
                    append_hlog(&mut hlog, &h, index, &mut out.notes);
                }
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => break,
        }
    }
    // Every worker has finished: the rest are final.
    while let Some((index, (_, h, ok, errors))) = pending.pop_first() {
        finish_interval(&mut out, index, &h, ok, errors, setup.progress);
        append_hlog(&mut hlog, &h, index, &mut out.notes);
    }
    drop(release);
    let (cpu_end, server_end) = match closing {
        Some(c) => c,
        // A worker failed before saying it was done: sample now.
        None => closing_samples(&mut setup, &mut peaks, &mut out.notes),
    };
    if started {
        out.own_cpu = CpuTimes {
            user_us: cpu_end.user_us.saturating_sub(cpu_start.user_us),
            system_us: cpu_end.system_us.saturating_sub(cpu_start.system_us),
        };
    }
    if server_end.is_some() {
        server_last = server_end;
    }
    if let (Some(a), Some(b)) = (server_start, server_last) {
        out.server = Some((a, b, peaks));
    }
    drop(hlog);
    if let Some(mut f) = file {
        if let Err(e) = f.flush() {
            out.notes
                .push(format!("cannot write the interval log: {e}"));
        }
    }
    out
}

/// loadgen's CPU time and the server's sample at the end of the measured window.
fn closing_samples(
    setup: &mut Setup,
    peaks: &mut Peaks,
    notes: &mut Vec<String>,
) -> (CpuTimes, Option<TreeSample>) {
    let cpu = proc::own_cpu();
    let sample = setup
        .sampler
        .as_mut()
        .and_then(|sampler| match sampler.sample(true) {
            Ok(s) => {
                peaks.update(&s);
                Some(s)
            }
            Err(e) => {
                notes.push(format!("the server could not be sampled at the end: {e}"));
                None
            }
        });
    setup.sampler = None;
    (cpu, sample)
}

type HlogWriter<'a, 'b> = hdrhistogram::serialization::interval_log::IntervalLogWriter<
    'a,
    'b,
    BufWriter<File>,
    V2DeflateSerializer,
>;

fn append_hlog(
    log: &mut Option<HlogWriter<'_, '_>>,
    h: &Histogram<u64>,
    index: u64,
    notes: &mut Vec<String>,
) {
    let Some(w) = log.as_mut() else {
        return;
    };
    let at = Duration::from_secs(index);
    if let Err(e) = w.write_histogram(h, at, Duration::from_secs(1), None) {
        notes.push(format!("cannot write the interval log: {e}"));
        *log = None;
    }
}

fn finish_interval(
    out: &mut Collected,
    index: u64,
    h: &Histogram<u64>,
    ok: u64,
    errors: u64,
    progress: bool,
) {
    let s = stats::Summary::of(h);
    let iv = IntervalSummary {
        t_s: index,
        ok,
        errors,
        p50_us: s.p50,
        p99_us: s.p99,
        max_us: s.max,
    };
    if progress {
        eprintln!(
            "[{:>4}s] {:>9} req/s  p50 {:>9}  p99 {:>9}  max {:>9}  errors {}",
            index + 1,
            ok,
            crate::report::fmt_us(s.p50),
            crate::report::fmt_us(s.p99),
            crate::report::fmt_us(s.max),
            errors
        );
    }
    out.intervals.push(iv);
}

/// Whether to print the live line, given `--progress`.
pub fn want_progress(p: crate::cli::Progress) -> bool {
    match p {
        crate::cli::Progress::Always => true,
        crate::cli::Progress::Never => false,
        crate::cli::Progress::Auto => std::io::stderr().is_terminal(),
    }
}
