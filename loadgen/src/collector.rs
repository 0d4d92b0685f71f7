//! The collector thread: merges the workers' per-second histograms, prints the live line,
//! writes the interval log, and samples the server's process tree.
//!
//! Workers never wait for it: they send an [`Interval`](crate::engine::Interval) over a crossbeam channel once a second
//! and go on. The collector merges interval `i` once every thread has sent it (or a later
//! one), so a slow thread delays the live line, never the load.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufWriter, IsTerminal, Write};
use std::path::PathBuf;
use std::time::Duration;

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use hdrhistogram::serialization::interval_log::{IntervalLogWriterBuilder, Tag};
use hdrhistogram::serialization::V2DeflateSerializer;
use hdrhistogram::Histogram;
use serde::Serialize;

use crate::clock::{Clock, NANOS};
use crate::engine::ToCollector;
use crate::proc::{self, CpuTimes, Peaks, TreeSample, TreeSampler};
use crate::schedule::Timetable;
use crate::stats;
use crate::syscalls::SyscallCounter;

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
    /// `--count-syscalls`: count loadgen's and (with a sampler) the server's system calls.
    pub count_syscalls: bool,
    /// Open loop: the schedule, for each second's target rate and the steps' log entries.
    pub timetable: Option<Timetable>,
    /// The share of the timetable this instance sends: 1, or a `--segment`'s share of the
    /// connection slots (each second's target is the run's times this).
    pub share: f64,
    /// `--segment`: the tag of every per-second histogram in the interval log, naming the
    /// instance, so that logs of several can be told apart once merged.
    pub tag: Option<String>,
}

/// One second of the run, merged over threads.
#[derive(Debug, Clone, Serialize)]
pub struct IntervalSummary {
    /// Seconds since the measured window began.
    pub t_s: u64,
    /// The interval's length: 1 s, except the last (which ends when the run did).
    pub length_s: f64,
    /// Replies verified in this second.
    pub ok: u64,
    /// Requests sent in this second.
    pub sent: u64,
    /// Open loop: the rate the schedule asked for over this second, requests per second.
    pub target_rps: Option<f64>,
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
    /// `--count-syscalls`: loadgen's system calls over the window, and the server tree's.
    pub syscalls: Option<(u64, Option<u64>)>,
    /// Problems worth a line in the summary (the server vanished, the log could not be written).
    pub notes: Vec<String>,
}

/// Runs the collector until every worker has hung up. When every worker's measured window is
/// over (each said Draining or Done), the closing samples are taken and `release` is dropped,
/// which lets the workers close their connections.
pub fn collect(mut setup: Setup, rx: Receiver<ToCollector>, release: Sender<()>) -> Collected {
    let mut out = Collected::default();
    let mut pending = Pending::new();

    // The interval log's BaseTime is the wall-clock start of the measured window, so each
    // interval's timestamp is its offset into the window.
    let wall_start = setup.clock.wall(setup.measure_from);
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
            .add_comment(
                "echolab loadgen: one histogram per second; values in microseconds \
                 (the max column in milliseconds: MaxValueDivisor 1000). On a ramp or \
                 steps, one histogram per step as well, tagged \"step\", of the requests \
                 scheduled in it",
            )
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
    let mut samples_taken = 0u64;
    let mut done = 0;
    let mut release = Some(release);
    let mut closing: Option<(CpuTimes, Option<TreeSample>)> = None;
    let mut counters: Option<Counters> = None;

    let mut upto: Vec<Option<u64>> = vec![None; setup.threads];
    // On a ramp or steps: each step's latency, merged over the threads as they finish.
    let mut steps: Vec<Histogram<u64>> = Vec::new();
    let mut finished = vec![false; setup.threads];
    // Threads whose measured window is over (they said Draining, or Done).
    let mut past_window = vec![false; setup.threads];
    loop {
        if closing.is_none() && (done >= setup.threads || past_window.iter().all(|&p| p)) {
            out.syscalls = counters.take().map(|c| c.read());
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
                // smaps_rollup takes the server's mmap lock and walks its page tables: memory
                // is read every 5 s and at the end, not every second.
                // Not in the first sample either: it marks the start of the window, and on a
                // tree of thousands of processes reading every smaps_rollup would take a
                // good part of a short window.
                let with_memory = samples_taken % 5 == 4;
                samples_taken += 1;
                match sampler.sample(with_memory) {
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
            // After the window's first sample, whose task list the server's counters use.
            if setup.count_syscalls && counters.is_none() && closing.is_none() {
                counters = Some(start_counting(&setup, &mut out.notes));
            }
            next_sample = next_sample.max(now) + NANOS;
        }
        let wait = Duration::from_nanos(next_sample.saturating_sub(setup.clock.now()));
        match rx.recv_timeout(wait) {
            Ok(ToCollector::Draining { thread }) => {
                if let Some(p) = past_window.get_mut(thread) {
                    *p = true;
                }
            }
            Ok(ToCollector::Done { thread }) => {
                done += 1;
                if let Some(f) = finished.get_mut(thread) {
                    *f = true;
                }
                if let Some(p) = past_window.get_mut(thread) {
                    *p = true;
                }
            }
            Ok(ToCollector::Interval(iv)) => {
                let entry = pending.entry(iv.index).or_insert_with(|| Partial {
                    end: 0,
                    latency: stats::new_histogram(),
                    ok: 0,
                    sent: 0,
                    errors: 0,
                });
                entry.end = entry.end.max(iv.end);
                let _ = entry.latency.add(&iv.latency);
                entry.ok += iv.ok;
                entry.sent += iv.sent;
                entry.errors += iv.errors;
                if let Some(u) = upto.get_mut(iv.thread) {
                    *u = (*u).max(Some(iv.index));
                }
            }
            Ok(ToCollector::Steps { latency }) => {
                if steps.len() < latency.len() {
                    steps.resize_with(latency.len(), stats::new_histogram);
                }
                for (a, b) in steps.iter_mut().zip(&latency) {
                    let _ = a.add(b);
                }
            }
            Err(RecvTimeoutError::Timeout) => continue,
            Err(RecvTimeoutError::Disconnected) => break,
        }
        flush_complete(&mut pending, &setup, &upto, &finished, &mut out, &mut hlog);
    }
    // Every worker has finished: the rest are final.
    while let Some((index, partial)) = pending.pop_first() {
        finish_interval(&mut out, &mut hlog, &setup, index, partial);
    }
    if let (Some(tt), Some(w)) = (&setup.timetable, hlog.as_mut()) {
        // Each step's histogram at its own start and length, tagged so that a reader
        // asking for the untagged (per-second) series does not see them.
        let end = out.intervals.last().map_or(setup.measure_from, |iv| {
            setup.measure_from + ((iv.t_s as f64 + iv.length_s) * 1e9) as u64
        });
        let tag = Tag::new("step");
        for (&(start, stop, _), h) in tt.steps().iter().zip(&steps) {
            if start >= end {
                break;
            }
            let at = Duration::from_nanos(start.saturating_sub(setup.measure_from));
            let length = Duration::from_nanos(stop.min(end).saturating_sub(start));
            if let Err(e) = w.write_histogram(h, at, length, tag) {
                out.notes
                    .push(format!("cannot write the interval log: {e}"));
                break;
            }
        }
    }
    drop(release);
    let (cpu_end, server_end) = match closing {
        Some(c) => c,
        // A worker failed before saying it was done: sample now.
        None => {
            out.syscalls = counters.take().map(|c| c.read());
            closing_samples(&mut setup, &mut peaks, &mut out.notes)
        }
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

/// `--count-syscalls`: the counters on loadgen and on the server's tree.
struct Counters {
    own: Option<SyscallCounter>,
    server: Option<SyscallCounter>,
    own_start: u64,
    server_start: u64,
}

impl Counters {
    /// The calls made since the start: loadgen's (0 if it could not be counted) and the
    /// server's.
    fn read(self) -> (u64, Option<u64>) {
        let own = self
            .own
            .map_or(0, |c| c.total().saturating_sub(self.own_start));
        let server = self
            .server
            .map(|c| c.total().saturating_sub(self.server_start));
        (own, server)
    }
}

/// Attaches the system-call counters as the window starts: to every thread of loadgen, and
/// to every task of the server's tree as the sampler last saw it.
fn start_counting(setup: &Setup, notes: &mut Vec<String>) -> Counters {
    let mut attach = |tids: Vec<i32>| match SyscallCounter::attach(tids) {
        Ok(c) => Some(c),
        Err(why) => {
            if !notes.contains(&why) {
                notes.push(why);
            }
            None
        }
    };
    let own = attach(SyscallCounter::own_threads());
    let server = setup.sampler.as_ref().and_then(|s| attach(s.tids()));
    Counters {
        own_start: own.as_ref().map_or(0, SyscallCounter::total),
        server_start: server.as_ref().map_or(0, SyscallCounter::total),
        own,
        server,
    }
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
    length: Duration,
    tag: Option<Tag<'_>>,
    notes: &mut Vec<String>,
) {
    let Some(w) = log.as_mut() else {
        return;
    };
    let at = Duration::from_secs(index);
    if let Err(e) = w.write_histogram(h, at, length, tag) {
        notes.push(format!("cannot write the interval log: {e}"));
        *log = None;
    }
}

/// Closes interval `index`: its summary, the live line, the interval log.
fn finish_interval(
    out: &mut Collected,
    hlog: &mut Option<HlogWriter<'_, '_>>,
    setup: &Setup,
    index: u64,
    p: Partial,
) {
    // A whole second, except the last interval, which ends when the last thread stopped.
    let start = setup.measure_from + index * NANOS;
    let length = p.end.saturating_sub(start).clamp(1, NANOS);
    let s = stats::Summary::of(&p.latency);
    let iv = IntervalSummary {
        t_s: index,
        length_s: length as f64 / 1e9,
        ok: p.ok,
        sent: p.sent,
        target_rps: setup
            .timetable
            .as_ref()
            .map(|tt| tt.mean_rate(start, start + length) * setup.share),
        errors: p.errors,
        p50_us: s.p50,
        p99_us: s.p99,
        max_us: s.max,
    };
    if setup.progress {
        eprintln!(
            "[{:>4}s] {:>9.0} req/s  p50 {:>9}  p99 {:>9}  max {:>9}  errors {}",
            index + 1,
            p.ok as f64 * 1e9 / length as f64,
            stats::fmt_us(s.p50),
            stats::fmt_us(s.p99),
            stats::fmt_us(s.max),
            p.errors
        );
    }
    append_hlog(
        hlog,
        &p.latency,
        index,
        Duration::from_nanos(length),
        setup.tag.as_deref().and_then(Tag::new),
        &mut out.notes,
    );
    out.intervals.push(iv);
}

/// Whether to print the live line, given `--progress`.
pub fn want_progress(p: crate::config::Progress) -> bool {
    match p {
        crate::config::Progress::Always => true,
        crate::config::Progress::Never => false,
        crate::config::Progress::Auto => std::io::stderr().is_terminal(),
    }
}

/// An interval being merged from the threads' reports.
#[derive(Debug)]
struct Partial {
    /// The latest end any thread reported (run time).
    end: u64,
    latency: Histogram<u64>,
    ok: u64,
    sent: u64,
    errors: u64,
}

type Pending = BTreeMap<u64, Partial>;

/// Finishes every leading interval that each thread has either sent or will never send.
fn flush_complete(
    pending: &mut Pending,
    setup: &Setup,
    upto: &[Option<u64>],
    finished: &[bool],
    out: &mut Collected,
    hlog: &mut Option<HlogWriter<'_, '_>>,
) {
    while let Some((&index, _)) = pending.iter().next() {
        let complete = upto
            .iter()
            .zip(finished)
            .all(|(u, &f)| f || u.is_some_and(|u| u >= index));
        if !complete {
            break;
        }
        let Some((_, partial)) = pending.pop_first() else {
            break;
        };
        finish_interval(out, hlog, setup, index, partial);
    }
}
